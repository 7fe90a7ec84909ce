"""`benchlab preflight` against moto, with botocore's Stubber for the APIs moto lacks (EC2 capacity
reservations, EC2 service quotas, EKS cluster versions). Passing and failing cases alike."""
from __future__ import annotations

import json

import pytest
from botocore.stub import Stubber
from moto import mock_aws

from cli import cli, preflight, stack_file
from stacks import config
from tests.conftest import REPO
from facts.instances import facts

REGION = "us-east-1"


class OperationStubber(Stubber):
    """A Stubber that answers only `operations` of a client; its other calls still reach
    moto. (A plain Stubber takes over every call of the client.)"""

    def __init__(self, client, *operations: str):
        super().__init__(client)
        self.operations = operations

    def _events(self):
        service = self.client.meta.service_model.service_id.hyphenize()
        for op in self.operations:
            yield (f"before-parameter-build.{service}.{op}", self._assert_expected_params,
                   f"{self._expected_params_event_id}-{op}")
            yield f"before-call.{service}.{op}", self._get_response_handler, f"{self._event_id}-{op}"

    def activate(self):
        for event, handler, unique_id in self._events():
            self.client.meta.events.register_first(event, handler, unique_id=unique_id)

    def deactivate(self):
        for event, handler, unique_id in self._events():
            self.client.meta.events.unregister(event, handler, unique_id=unique_id)


def quota_reply(code: str, value: float) -> dict:
    return {"Quota": {"ServiceCode": "ec2", "QuotaCode": code, "Value": value}}


def version_reply(version: str, status: str) -> dict:
    return {"clusterVersions": [{"clusterVersion": version, "versionStatus": status}]}


def reservation(az: str, itype: str = "p4d.24xlarge", match: str = "open", kind: str = "default",
                state: str = "active") -> dict:
    return {"CapacityReservationId": f"cr-{az}-{match}", "InstanceType": itype,
            "AvailabilityZone": az, "InstanceMatchCriteria": match, "ReservationType": kind,
            "State": state, "TotalInstanceCount": 2, "AvailableInstanceCount": 2}


@pytest.fixture
def aws():
    """Moto-backed clients; quotas/EKS fully stubbed, capacity reservations stubbed on moto's EC2."""
    with mock_aws():
        clients = preflight.AwsClients.create(REGION)
        stubs = {"quotas": Stubber(clients.quotas), "eks": Stubber(clients.eks),
                 "reservations": OperationStubber(clients.ec2, "DescribeCapacityReservations")}
        for stub in stubs.values():
            stub.activate()
        yield clients, stubs
        for stub in stubs.values():
            stub.deactivate()


def stub_quotas(stub: Stubber, values: dict[str, float]) -> None:
    for family in sorted(values):  # run_checks asks in family order
        code = preflight.QUOTA_CODES[family]
        stub.add_response("get_service_quota", quota_reply(code, values[family]),
                          {"ServiceCode": "ec2", "QuotaCode": code})


ENOUGH = {"G": 192, "P": 192, "Standard": 32}


def stub_happy_path(stubs, reservations: list[dict] | None = None) -> None:
    stub_quotas(stubs["quotas"], ENOUGH)
    stubs["eks"].add_response("describe_cluster_versions", version_reply("1.32", "STANDARD_SUPPORT"),
                              {"clusterVersions": ["1.32"]})
    stubs["reservations"].add_response(
        "describe_capacity_reservations",
        {"CapacityReservations": reservations if reservations is not None else [reservation("us-east-1a")]})


def by_name(checks):
    return {c.name: c for c in checks}


def test_dev_stack_passes_every_check(aws):
    clients, stubs = aws
    stub_happy_path(stubs)
    locked = {reference: "sha256:" + "0" * 64 for reference in config.parse({}).images().values()}
    checks = preflight.run_checks(config.parse({"imageDigests": locked}), clients, "dev")
    assert [c for c in checks if c.status != "pass"] == []
    names = set(by_name(checks))
    assert {"credentials", "prefill p4d.24xlarge offered", "decode g6e.12xlarge offered",
            "EFA on p4d.24xlarge", "EFA on g6e.12xlarge", "on-demand P vCPU quota",
            "on-demand G vCPU quota", "EKS 1.32", "capacity reservations"} <= names
    assert "cr-us-east-1a-open" in by_name(checks)["capacity reservations"].detail
    for stub in stubs.values():
        stub.assert_no_pending_responses()


def test_gpu_zone_without_the_gpu_type_fails_and_names_zones_offering_all_gpu_types(aws):
    clients, _ = aws
    cfg = config.parse({"nodeGroups": {"prefill": {"instanceType": "p4de.24xlarge", "count": 2,
                                                   "diskGib": 500}}})
    checks = by_name(preflight.check_offerings(cfg, clients.ec2))
    prefill = checks["prefill p4de.24xlarge offered"]
    assert prefill.status == "fail"
    assert "not offered in us-east-1a" in prefill.detail
    # moto's offerings: p4de in 1b and 1c, g6e.12xlarge in 1a-1d
    assert "gpuAvailabilityZone to one of us-east-1b, us-east-1c" in prefill.fix
    assert checks["decode g6e.12xlarge offered"].status == "pass"


def test_system_type_missing_in_a_zone_fails(aws):
    clients, _ = aws
    cfg = config.parse({"availabilityZones": ["us-east-1a", "us-east-1e"]})
    system = by_name(preflight.check_offerings(cfg, clients.ec2))["system m7i.2xlarge offered"]
    assert system.status == "fail" and "us-east-1e" in system.detail


def test_gpu_type_without_efa_fails(aws):
    clients, _ = aws
    stub = OperationStubber(clients.ec2, "DescribeInstanceTypes")
    stub.add_response("describe_instance_types", {"InstanceTypes": [
        {"InstanceType": "g6e.12xlarge", "NetworkInfo": {"EfaSupported": False}},
        {"InstanceType": "p4d.24xlarge", "NetworkInfo": {"EfaSupported": True,
                                                         "EfaInfo": {"MaximumEfaInterfaces": 2}}}]})
    with stub:
        checks = by_name(preflight.check_efa(config.parse({}), clients.ec2))
    assert checks["EFA on g6e.12xlarge"].status == "fail"
    p4d = checks["EFA on p4d.24xlarge"]  # facts say 4 interfaces, AWS says at most 2
    assert p4d.status == "fail" and "at most 2" in p4d.detail


def test_vcpus_needed_is_the_peak_of_both_modes():
    cfg = config.parse({})
    p4d, g6e, m7i = facts("p4d.24xlarge"), facts("g6e.12xlarge"), facts("m7i.2xlarge")
    # agg uses the prefill group only, disagg both: the peak is disagg's
    assert preflight.vcpus_needed(cfg) == {"P": 2 * p4d.vcpus, "G": 4 * g6e.vcpus,
                                           "Standard": 2 * m7i.vcpus}


def test_quota_too_small_fails_with_the_request_command(aws):
    clients, stubs = aws
    stub_quotas(stubs["quotas"], {**ENOUGH, "P": 96})
    checks = by_name(preflight.check_quotas(config.parse({}), clients.quotas, clients.ec2))
    quota = checks["on-demand P vCPU quota"]
    assert quota.status == "fail"
    assert "quota 96, in use 0, the lab needs 192" in quota.detail
    assert "--quota-code L-417A185B --desired-value 192" in quota.fix
    assert checks["on-demand G vCPU quota"].status == "pass"


def test_running_instances_count_against_the_quota(aws):
    clients, stubs = aws
    clients.ec2.run_instances(ImageId="ami-12c6146b", InstanceType="p4d.24xlarge",
                              MinCount=1, MaxCount=1)
    stub_quotas(stubs["quotas"], ENOUGH)  # 192 P vCPUs: enough for the lab alone
    quota = by_name(preflight.check_quotas(config.parse({}), clients.quotas, clients.ec2))[
        "on-demand P vCPU quota"]
    assert quota.status == "fail" and "in use 96" in quota.detail
    assert "--desired-value 288" in quota.fix


def test_unchanged_quota_falls_back_to_the_aws_default(aws):
    clients, stubs = aws
    code = preflight.QUOTA_CODES["P"]
    stubs["quotas"].add_client_error("get_service_quota", "NoSuchResourceException")
    stubs["quotas"].add_response("get_aws_default_service_quota", quota_reply(code, 0),
                                 {"ServiceCode": "ec2", "QuotaCode": code})
    assert preflight._quota_value(clients.quotas, code) == 0


@pytest.mark.parametrize("status, expected", [("STANDARD_SUPPORT", "pass"),
                                              ("EXTENDED_SUPPORT", "warn"),
                                              ("UNSUPPORTED", "fail")])
def test_eks_version_support_status(aws, status, expected):
    clients, stubs = aws
    stubs["eks"].add_response("describe_cluster_versions", version_reply("1.32", status))
    assert preflight.check_eks_version(config.parse({}), clients.eks).status == expected


def test_eks_version_not_offered_fails(aws):
    clients, stubs = aws
    stubs["eks"].add_response("describe_cluster_versions", {"clusterVersions": []})
    check = preflight.check_eks_version(config.parse({}), clients.eks)
    assert check.status == "fail" and "kubernetesVersion" in check.fix


def test_reservations_elsewhere_or_targeted_warn_with_a_fix(aws):
    clients, stubs = aws
    stubs["reservations"].add_response("describe_capacity_reservations", {"CapacityReservations": [
        reservation("us-east-1b"), reservation("us-east-1a", match="targeted")]})
    check = preflight.check_capacity_reservations(config.parse({}), clients.ec2)
    assert check.status == "warn"
    assert "cr-us-east-1b-open" in check.detail and "cr-us-east-1a-targeted" in check.detail
    assert "launch template" in check.fix


def test_no_reservation_is_a_warning_not_a_failure(aws):
    clients, stubs = aws
    stubs["reservations"].add_response("describe_capacity_reservations", {"CapacityReservations": []})
    assert preflight.check_capacity_reservations(config.parse({}), clients.ec2).status == "warn"


def test_access_denied_fails_the_check_and_names_the_permission(aws):
    clients, stubs = aws
    stubs["eks"].add_client_error("describe_cluster_versions", "AccessDeniedException", http_status_code=403)
    check = preflight.check_eks_version(config.parse({}), clients.eks)
    assert check.status == "fail" and "eks:DescribeClusterVersions" in check.fix


def test_bad_credentials_fail_and_skip_the_rest(aws):
    clients, _ = aws
    with Stubber(clients.sts) as sts:
        sts.add_client_error("get_caller_identity", "ExpiredToken", "The security token expired")
        checks = preflight.run_checks(config.parse({}), clients, "dev")
    assert [(c.name, c.status) for c in checks] == [("credentials", "fail"), ("other checks", "skip")]
    assert "aws configure" in checks[0].fix


def test_cli_exit_code_and_table(aws, monkeypatch, capsys, tmp_path):
    clients, stubs = aws
    # the dev stack with the user's own CIDR set: the shipped placeholder fails (test_cluster_access.py)
    text = (REPO / "Pulumi.dev.yaml").read_text().replace("[203.0.113.0/24]", "[93.184.216.34/32]")
    (tmp_path / "Pulumi.dev.yaml").write_text(text)
    monkeypatch.setattr(stack_file, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(preflight.AwsClients, "create", classmethod(lambda cls, region, profile: clients))
    monkeypatch.setattr(preflight, "local_checks", lambda cfg: [])  # tests/test_preflight_local.py
    stub_happy_path(stubs)
    assert cli.main(["preflight", "--stack", "dev"]) == 0
    out = capsys.readouterr().out
    assert "PASS  credentials" in out and "all checks passed" in out

    stub_quotas(stubs["quotas"], {**ENOUGH, "G": 0})
    stubs["eks"].add_response("describe_cluster_versions", version_reply("1.32", "STANDARD_SUPPORT"))
    stubs["reservations"].add_response("describe_capacity_reservations", {"CapacityReservations": []})
    assert cli.main(["preflight", "--json"]) == 1
    failed = [c for c in json.loads(capsys.readouterr().out) if c["status"] == "fail"]
    assert [c["name"] for c in failed] == ["on-demand G vCPU quota"]


def test_cli_unknown_stack_is_a_clear_error(capsys):
    assert cli.main(["preflight", "--stack", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "no stack file" in err and "Pulumi.nosuch.yaml" in err and "dev" in err


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["preflight", "--help"])
    assert exit_.value.code == 0
    assert "--stack" in capsys.readouterr().out


def test_preflight_states_the_gpu_release_and_lease():
    check = preflight.check_gpu_release(config.parse({}))
    assert check.status == "pass" and "10 min after each results export" in check.detail
    assert "lease 6 h" in check.detail and "pulumi up --refresh" in check.detail
    off = preflight.check_gpu_release(config.parse({"gpuRelease": {"graceMinutes": 0, "leaseHours": 7}}))
    assert off.status == "warn" and "lease 7 h" in off.detail and "gpuRelease.graceMinutes" in off.fix


def test_extended_support_names_the_price_and_the_date(aws):
    clients, stubs = aws
    stubs["eks"].add_response("describe_cluster_versions", version_reply("1.32", "EXTENDED_SUPPORT"))
    check = preflight.check_eks_version(config.parse({}), clients.eks)
    assert check.status == "warn" and "$0.60/h instead of $0.10/h" in check.detail
    assert "2026-03-23" in check.detail


# --- credentials that outlive the campaign (issue 24.5) -------------------------------------
def env_credentials(monkeypatch, **env):
    """botocore's own credentials from `env` alone (its EnvProvider), as `aws eks get-token` sees them."""
    import botocore.session

    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CREDENTIAL_EXPIRATION"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret", **env}.items():
        monkeypatch.setenv(key, value)
    return botocore.session.Session().get_credentials()


NOW = __import__("datetime").datetime(2026, 5, 1, 12, 0, tzinfo=__import__("datetime").timezone.utc)


def test_an_exported_one_hour_session_fails_against_the_planned_campaign(monkeypatch):
    creds = env_credentials(monkeypatch, AWS_SESSION_TOKEN="token", AWS_CREDENTIAL_EXPIRATION="2026-05-01T13:00:00Z")
    minutes = preflight.campaign_minutes(config.parse({}))
    assert minutes > 180  # Pulumi.dev.yaml's campaign: about 3.5 h (`benchlab cost`)
    check = preflight.check_credential_lifetime(creds, minutes, NOW)
    assert check.status == "fail" and "in 60 min" in check.detail
    assert "role_arn + source_profile" in check.fix and "at least 4 h" in check.fix


def test_a_session_longer_than_the_campaign_passes(monkeypatch):
    creds = env_credentials(monkeypatch, AWS_SESSION_TOKEN="token", AWS_CREDENTIAL_EXPIRATION="2026-05-01T20:00:00Z")
    assert preflight.check_credential_lifetime(creds, 210, NOW).status == "pass"


def test_a_session_token_of_unknown_expiry_is_warned_of(monkeypatch):
    check = preflight.check_credential_lifetime(env_credentials(monkeypatch, AWS_SESSION_TOKEN="token"), 210, NOW)
    assert check.status == "warn" and "export-credentials" in check.fix


def test_long_term_keys_and_refreshing_credentials_pass(monkeypatch):
    from botocore.credentials import DeferredRefreshableCredentials

    assert preflight.check_credential_lifetime(env_credentials(monkeypatch), 210, NOW).status == "pass"
    assumed = DeferredRefreshableCredentials(refresh_using=lambda: {}, method="assume-role")
    check = preflight.check_credential_lifetime(assumed, 210, NOW)
    assert check.status == "pass" and "assume-role" in check.detail


# --- the creator in clusterAccess.admins (issue 24.7) ---------------------------------------
CALLER = "arn:aws:sts::123456789012:assumed-role/lab-admin/alice"


def admins(*arns):
    return config.parse({"clusterAccess": {"admins": list(arns)}})


def test_listing_your_own_role_fails_before_the_cluster_exists(aws):
    clients, stubs = aws
    stubs["eks"].add_client_error("describe_cluster", "ResourceNotFoundException", expected_params={"name": "benchlab-dev"})
    cfg = admins("arn:aws:iam::123456789012:role/team/lab-admin", "arn:aws:iam::123456789012:role/ci")
    check = preflight.check_creator_not_listed(cfg, CALLER, clients.eks, "benchlab-dev")
    assert check.status == "fail" and "bootstrapClusterCreatorAdminPermissions" in check.detail
    assert "remove arn:aws:iam::123456789012:role/team/lab-admin" in check.fix


def test_listing_yourself_on_an_existing_cluster_is_a_warning(aws):
    clients, stubs = aws
    stubs["eks"].add_response("describe_cluster", {"cluster": {"name": "benchlab-dev"}}, {"name": "benchlab-dev"})
    check = preflight.check_creator_not_listed(admins("arn:aws:iam::123456789012:role/lab-admin"), CALLER,
                                               clients.eks, "benchlab-dev")
    assert check.status == "warn"


def test_other_admins_pass_without_an_aws_call(aws):
    clients, _ = aws  # the EKS stubber has no response queued: a call would raise
    check = preflight.check_creator_not_listed(admins("arn:aws:iam::123456789012:role/ci"), CALLER,
                                               clients.eks, "benchlab-dev")
    assert check.status == "pass" and "arn:aws:iam::123456789012:role/lab-admin (you)" in check.detail


# --- zones EKS accepts for a control plane (issue 24.8) -------------------------------------
def test_a_zone_whose_id_eks_refuses_fails_by_id(aws):
    clients, _ = aws
    # moto maps us-east-1e to use1-az3, which EKS refuses for cluster subnets
    cfg = config.parse({"availabilityZones": ["us-east-1a", "us-east-1e"]})
    check = preflight.check_control_plane_zones(cfg, clients.ec2)
    assert check.status == "fail" and "us-east-1e" in check.detail and "use1-az3" in check.detail
    assert "us-east-1e" not in check.fix and "us-east-1a" in check.fix


def test_zone_ids_are_read_for_this_account(aws):
    clients, _ = aws
    stub = OperationStubber(clients.ec2, "DescribeAvailabilityZones")
    stub.add_response("describe_availability_zones", {"AvailabilityZones": [
        {"ZoneName": "us-east-1a", "ZoneId": "use1-az3", "ZoneType": "availability-zone"},
        {"ZoneName": "us-east-1b", "ZoneId": "use1-az1", "ZoneType": "availability-zone"},
        {"ZoneName": "us-east-1c", "ZoneId": "use1-az2", "ZoneType": "availability-zone"}]})
    with stub:  # another account: here us-east-1a is the refused zone
        check = preflight.check_control_plane_zones(config.parse({}), clients.ec2)
    assert check.status == "fail" and "us-east-1a = use1-az3" in check.detail
    assert check.fix.endswith("among us-east-1b, us-east-1c")


def test_the_default_zones_pass_on_moto(aws):
    clients, _ = aws
    check = preflight.check_control_plane_zones(config.parse({}), clients.ec2)
    assert check.status == "pass" and "us-east-1a = use1-az6" in check.detail
