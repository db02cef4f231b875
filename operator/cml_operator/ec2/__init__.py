"""The EC2 boundary: botocore errors and boto3 clients never leave this package."""

from .client import EC2Client, EC2ClientSettings, MetadataOptions, RootVolume
from .errors import parse_aws_error
from .exceptions import *  # noqa: F403  (the ten names of the seed's hierarchy)
from .exceptions import __all__ as _exception_names
from .models import CMLWorkerInstanceDto, ImageInfo, InstanceStatusChecks

__all__ = [
    "EC2Client", "EC2ClientSettings", "MetadataOptions", "RootVolume", "parse_aws_error",
    "CMLWorkerInstanceDto", "ImageInfo", "InstanceStatusChecks", *_exception_names,
]
