"""IAM Roles for Service Accounts: a role that exactly one Kubernetes service account may assume."""
from __future__ import annotations

import json

import pulumi


def irsa_trust_policy(oidc_provider_arn: pulumi.Input[str], oidc_provider_url: pulumi.Input[str],
                      namespace: str, service_account: str) -> pulumi.Output[str]:
    """A role trust policy for one Kubernetes service account (IAM Roles for Service Accounts)."""
    def policy(arn: str, url: str) -> str:
        return json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {
                f"{url}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                f"{url}:aud": "sts.amazonaws.com"}},
        }]})
    return pulumi.Output.all(oidc_provider_arn, oidc_provider_url).apply(lambda a: policy(*a))
