"""README stays true: every config key is documented with its default."""

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sidecar.config import Config

MAPPED = {"upstreams": "NAME", "per_site": "SITE"}
README = (Path(__file__).parents[2] / "README.md").read_text()


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _keys(model: type[BaseModel], prefix: str) -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        keys.append(key)
        sub = _model_of(field.annotation)
        if sub is not None:
            # mappings are documented with a stand-in for the name: upstreams.NAME.key,
            # discovery.per_site.SITE.key
            inner = f"{key}.{MAPPED[name]}." if name in MAPPED else f"{key}."
            keys.extend(_keys(sub, inner))
    return keys


def test_every_config_key_is_in_the_readme() -> None:
    """Each dotted config key appears in README's config reference."""
    missing = [key for key in _keys(Config, "") if f"`{key}`" not in README]
    assert not missing, f"README lacks config keys: {missing}"
