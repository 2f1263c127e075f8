"""Request bodies: every input serializer refuses fields it does not know.

DRF ignores unknown keys, so `{"owner": 7}` on project create or a typo such
as `{"max_label": 5}` would be accepted silently and do nothing; here each
unknown key is a 400 that names it and lists the fields the endpoint takes.
"""
from __future__ import annotations

from collections.abc import Mapping

from rest_framework import serializers

# Sent by browsers with every form post; not a field of any body.
_IGNORED = {"csrfmiddlewaretoken"}


class StrictBody(serializers.Serializer):
    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            known = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(set(data) - known - _IGNORED)
            if unknown:
                takes = ", ".join(sorted(known))
                raise serializers.ValidationError(
                    {name: [f"unknown field; this endpoint takes {takes}"] for name in unknown}
                )
        return super().to_internal_value(data)


def strict_request_bodies(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook: request bodies (every one a StrictBody) take no other properties."""
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request") and component.get("type") == "object":
            component["additionalProperties"] = False
    return result
