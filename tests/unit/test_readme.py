"""README stays true: every config key is documented with its default."""

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sidecar.config import Config

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
            # upstreams is a mapping of name -> Upstream: documented as upstreams.NAME.key
            inner = f"{key}.NAME." if name == "upstreams" else f"{key}."
            keys.extend(_keys(sub, inner))
    return keys


def test_every_config_key_is_in_the_readme() -> None:
    """Each dotted config key appears in README's config reference."""
    missing = [key for key in _keys(Config, "") if f"`{key}`" not in README]
    assert not missing, f"README lacks config keys: {missing}"
