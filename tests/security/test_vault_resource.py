"""``resources.vault``: the central AppRole through ``dg.EnvVar``, against a real OpenBao server."""

import dagster as dg
import pytest
from hvac import exceptions as hvac_exc

from edge_sync.vault import DeviceRevoked, VaultSession
from edge_sync.vault_keys import VaultTransitKeyService
from resources.keys import KeyServiceResource
from resources.vault import (
    ADDR_ENV,
    ROLE_ID_ENV,
    SECRET_ID_ENV,
    VaultKeyServiceResource,
    VaultResource,
    vault_from_env,
)

pytestmark = [pytest.mark.services, pytest.mark.xdist_group("openbao")]


@pytest.fixture
def central_env(openbao, vault_admin, unique_id, monkeypatch) -> tuple[str, str]:
    role_id, secret_id = vault_admin.enrol_central(unique_id("node"))
    monkeypatch.setenv(ADDR_ENV, openbao[0])
    monkeypatch.setenv(ROLE_ID_ENV, role_id)
    monkeypatch.setenv(SECRET_ID_ENV, secret_id)
    return role_id, secret_id


def _device_data_key(openbao, vault_admin, tenant: str):
    creds = vault_admin.enrol_device(tenant, "d1", token_ttl="60s")
    return VaultTransitKeyService(VaultSession(openbao[0], *creds)).generate_data_key(tenant)


def _run_unwrap(openbao, vault_admin, tenant: str):
    """Run an asset that unwraps a device's data key through ``VaultKeyServiceResource(vault_from_env())``."""
    dk = _device_data_key(openbao, vault_admin, tenant)

    @dg.asset
    def unwrapped(context: dg.AssetExecutionContext, key_service: KeyServiceResource) -> dg.MaterializeResult:
        keys = key_service.get()
        assert keys.unwrap(tenant, dk.key_id, dk.wrapped) == dk.plaintext
        # the accessor identifies the token without granting anything: safe as metadata
        return dg.MaterializeResult(metadata={"accessor": key_service.vault.session().token_accessor})

    defs = dg.Definitions(
        assets=[unwrapped], resources={"key_service": VaultKeyServiceResource(vault=vault_from_env())}
    )
    with dg.instance_for_test() as instance:
        res = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance)
        assert res.success
        accessor = res.asset_materializations_for_node("unwrapped")[0].metadata["accessor"].value
        run = instance.get_run_by_id(res.run_id)
    assert accessor
    return accessor, run


def test_asset_unwraps_with_the_env_configured_central_role(
    openbao, vault_admin, central_env, unique_id
) -> None:
    _, run = _run_unwrap(openbao, vault_admin, unique_id("t"))
    role_id, secret_id = central_env
    assert secret_id not in str(run.run_config) and role_id not in str(run.run_config)


def test_the_runs_token_is_revoked_at_teardown(
    openbao, vault_admin, root_client, central_env, unique_id
) -> None:
    accessor, _ = _run_unwrap(openbao, vault_admin, unique_id("t"))
    with pytest.raises((hvac_exc.InvalidRequest, hvac_exc.InvalidPath, hvac_exc.Forbidden)):
        root_client.auth.token.lookup_accessor(accessor)


def test_resource_repr_and_errors_never_show_the_credentials(openbao, central_env) -> None:
    role_id, secret_id = central_env
    resource = VaultResource(addr=openbao[0], role_id=role_id, secret_id=secret_id)
    shown = repr(resource) + str(resource) + repr(VaultKeyServiceResource(vault=resource))
    assert openbao[0] in shown and secret_id not in shown and role_id not in shown

    wrong = "wrong-secret-id-3c9e41"
    with pytest.raises(DeviceRevoked) as err:
        VaultResource(addr=openbao[0], role_id=role_id, secret_id=wrong).key_service().generate_data_key("x")
    assert wrong not in str(err.value) and role_id not in str(err.value)


def test_missing_settings_name_the_environment_variable() -> None:
    with pytest.raises(ValueError, match=ADDR_ENV):
        VaultResource(addr="", role_id="r", secret_id="s").session()
    with pytest.raises(ValueError, match=SECRET_ID_ENV):
        VaultResource(addr="http://127.0.0.1:1", role_id="r", secret_id="").session()


def test_production_wiring_keeps_only_variable_names_in_config() -> None:
    resource = vault_from_env()
    # EnvVar fields are resolved at run time; the definitions carry the names only
    assert {resource.addr, resource.role_id, resource.secret_id} == {ADDR_ENV, ROLE_ID_ENV, SECRET_ID_ENV}
    assert isinstance(resource.secret_id, dg.EnvVar)
