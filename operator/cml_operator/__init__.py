"""cml-operator: reconciles CMLWorker resources (Cisco Modeling Labs workers) against Amazon EC2."""

__version__ = "0.1.0"
