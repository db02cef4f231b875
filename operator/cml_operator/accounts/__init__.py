"""AWS accounts the operator assumes roles in: STS AssumeRole, and each account's credentials, cached and renewed.

``sts``: the one place that calls STS (and translates its errors);
``sessions``: ``RoleSession``, one CMLAccount's assumed-role credentials, renewed before they end.
"""
