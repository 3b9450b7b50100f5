"""The feature-family schemas (defined in the leaf module :mod:`ephys2tx.schemas`)."""

from ephys2tx.schemas import (  # noqa: F401 - the public names of this module
    HUMAN_IPFX_SCHEMA,
    MOUSE_VISP_SCHEMA,
    SCHEMAS,
    FamilySchema,
    resolve_families,
    validate_families,
)

__all__ = ["FamilySchema", "HUMAN_IPFX_SCHEMA", "MOUSE_VISP_SCHEMA", "SCHEMAS", "resolve_families",
           "validate_families"]
