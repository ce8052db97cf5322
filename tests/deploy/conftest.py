"""Fixtures of the deploy checks: every kustomize render (overlay x optional components, with at
most one Redis choice: redis_setup.supported_variants), rendered once per session."""
import pytest

from redis_setup import supported_variants
from support.deploy import render_variant, variant_id


@pytest.fixture(scope="session")
def render_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("kustomize")


@pytest.fixture(scope="session", params=supported_variants(), ids=variant_id)
def rendered(request, render_dir):
    overlay, components = request.param
    return {"overlay": overlay, "components": components,
            "objects": render_variant(overlay, components, render_dir)}
