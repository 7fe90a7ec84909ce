"""The GPU restore: a released GPU node group back to its configured size when a new run starts.

Runs as an AWS Lambda function (components/gpu_restore.py invokes it from `pulumi up` once per
run and node group), not in the cluster: the GPU release scales a group to zero behind Pulumi's
back, and Pulumi's state still holds the configured size, so a plain `up` would see no change.
The event names the group and the scaling it must have; a group already there is left alone.
Standard library and boto3 only (the Lambda Python runtime includes boto3).
"""
from __future__ import annotations

from typing import Any

SIZES = ("minSize", "desiredSize", "maxSize")


def restore(eks: Any, event: dict) -> dict:
    """Set the node group's scaling to the event's; return what it was and whether it changed."""
    group = eks.describe_nodegroup(clusterName=event["cluster"],
                                   nodegroupName=event["nodegroup"])["nodegroup"]
    before = {key: group["scalingConfig"][key] for key in SIZES}
    wanted = {key: int(event[key]) for key in SIZES}
    if before == wanted:
        return {"nodegroup": event["nodegroup"], "changed": False, "scaling": before}
    eks.update_nodegroup_config(clusterName=event["cluster"], nodegroupName=event["nodegroup"],
                                scalingConfig=wanted)
    return {"nodegroup": event["nodegroup"], "changed": True, "before": before, "scaling": wanted}


def handler(event: dict, context: Any) -> dict:
    import boto3

    result = restore(boto3.client("eks"), event)
    print(result, flush=True)  # the function's log group keeps the record
    return result
