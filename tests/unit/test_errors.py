"""``pipeline.errors.validation_message``: pydantic's messages as the commands and the collector
print them."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError, field_validator

from pipeline.errors import validation_message


class _Model(BaseModel):
    port: int
    name: str

    @field_validator("name")
    @classmethod
    def _lower(cls, value: str) -> str:
        if value != value.lower():
            raise ValueError("name must be lower case")
        return value


def test_a_validator_of_ours_reads_without_pydantics_prefix() -> None:
    with pytest.raises(ValidationError) as refused:
        _Model(port="x", name="Shout")  # type: ignore[arg-type]
    messages = {e["loc"][0]: validation_message(e) for e in refused.value.errors()}
    assert messages == {
        "port": "Input should be a valid integer, unable to parse string as an integer",
        "name": "name must be lower case",
    }
