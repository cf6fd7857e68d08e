"""Every setting is documented in .env.example, and nothing there is unknown to Settings."""

import re

from tests.conftest import PROJECT_ROOT

from prodclass.settings import Settings


def test_env_example_documents_exactly_the_settings():
    text = (PROJECT_ROOT / ".env.example").read_text()
    documented = set(re.findall(r"PRODCLASS_([A-Z0-9_]+)=", text))
    documented -= {"TEST_POSTGRES_URL", "TEST_REDIS_URL"}
    assert documented == {name.upper() for name in Settings.model_fields}
