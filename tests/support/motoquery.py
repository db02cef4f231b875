"""Direct questions to moto for the fault proxy's strict world (tags, states, image owners).

Unsigned by any real key, so unrestricted by IAM, and not counted: what EC2 knows internally.
"""

from __future__ import annotations

import http.client
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass


@dataclass
class MotoQuery:
    upstream: urllib.parse.SplitResult | None

    def _ask(self, region: str, params: dict[str, str]) -> ET.Element | None:
        """Ask moto directly (unsigned, unrestricted, uncounted); None when it answers an error."""
        if self.upstream is None:
            return None
        body = urllib.parse.urlencode({**params, "Version": "2016-11-15"})
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "Authorization": f"AWS4-HMAC-SHA256 Credential=faultproxy/20200101/{region}/ec2/aws4_request, "
                                    "SignedHeaders=host, Signature=0"}
        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        try:
            connection.request("POST", "/", body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        if response.status >= 300:
            return None
        root = ET.fromstring(payload)
        for element in root.iter():
            element.tag = element.tag.rsplit("}", 1)[-1]
        return root

    def _instances(self, region: str, ids: list[str]) -> list[ET.Element]:
        if not ids:
            return []
        root = self._ask(region, {"Action": "DescribeInstances",
                                   **{f"InstanceId.{n}": i for n, i in enumerate(ids, 1)}})
        if root is None:
            return []
        return [item for instances in root.iter("instancesSet") for item in instances.findall("item")]

    def instance_tags(self, region: str, ids: list[str]) -> dict[str, dict[str, str]]:
        return {item.findtext("instanceId", ""): {tag.findtext("key", ""): tag.findtext("value", "")
                                                  for tag in item.findall("tagSet/item")}
                for item in self._instances(region, ids)}

    def states(self, region: str, ids: list[str]) -> dict[str, str]:
        return {item.findtext("instanceId", ""): item.findtext("instanceState/name", "")
                for item in self._instances(region, ids)}

    def image_owner(self, region: str, image_id: str) -> str | None:
        """The image's ``ec2:Owner`` as IAM sees it: the alias (``amazon``, ``aws-marketplace``) or the account id."""
        root = self._ask(region, {"Action": "DescribeImages", "ImageId.1": image_id})
        if root is None:
            return None
        return root.findtext("imagesSet/item/imageOwnerAlias") or root.findtext("imagesSet/item/imageOwnerId")
