"""docs/deploy.md's tables of environment variables list exactly what compose and Kubernetes set."""
import pytest

from support.deploy import (
    GATEWAY,
    OVERLAYS,
    SERVICES,
    compose_env,
    container,
    doc_table,
    k8s_env,
    render_variant,
)


@pytest.mark.parametrize("name", SERVICES + (GATEWAY, "redis"))
def test_deploy_doc_tables_list_what_the_deploy_files_set(name, render_dir):
    names = set(compose_env(name))
    for overlay in OVERLAYS:
        names |= set(k8s_env(container(render_variant(overlay, (), render_dir), name)))
    assert doc_table(name) == names
