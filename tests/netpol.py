"""A small evaluator of Kubernetes NetworkPolicy (networking.k8s.io/v1) over pod labels,
namespaces, IP addresses and ports, for testing the policies the program renders.

Semantics (https://kubernetes.io/docs/concepts/services-networking/network-policies/): a pod
selected by no policy of a direction is open in that direction; otherwise a connection needs
a rule of some selecting policy that matches the peer and the port. Pod to pod needs both the
source's egress and the destination's ingress. As with the VPC CNI, pods have VPC addresses,
so an ipBlock matches pods too (the AWS agent enforces by address).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict = field(default_factory=dict)
    ip: str = "10.42.200.1"  # a pod address in the VPC

    def namespace_labels(self) -> dict:
        return {"kubernetes.io/metadata.name": self.namespace}


@dataclass(frozen=True)
class External:
    ip: str  # an address outside the cluster's pods: a node, the API server, the internet


def selects(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        present = key in labels
        ok = {"In": present and labels[key] in values, "NotIn": not present or labels[key] not in values,
              "Exists": present, "DoesNotExist": not present}[op]
        if not ok:
            return False
    return True


def _in_block(ip: str, block: dict) -> bool:
    address = ipaddress.ip_address(ip)
    return (address in ipaddress.ip_network(block["cidr"])
            and not any(address in ipaddress.ip_network(e) for e in block.get("except", [])))


def _peer_matches(peer: dict, policy_namespace: str, other: Pod | External) -> bool:
    if "ipBlock" in peer:
        return _in_block(other.ip, peer["ipBlock"])
    if not isinstance(other, Pod):
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], other.namespace_labels()):
            return False
    elif other.namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector", {}), other.labels)


def _port_matches(rule_ports: list[dict] | None, port: int, protocol: str) -> bool:
    if not rule_ports:
        return True
    for p in rule_ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p:
            return True
        if isinstance(p["port"], str):
            raise ValueError(f"named port {p['port']!r}: the evaluator checks numbers only")
        if p["port"] <= port <= p.get("endPort", p["port"]):  # numbers (floats after the mocks)
            return True
    return False


def _allowed(policies: list[dict], pod: Pod, other: Pod | External, port: int, protocol: str,
             direction: str) -> bool:
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [p for p in policies if p["metadata"]["namespace"] == pod.namespace
                 and selects(p["spec"]["podSelector"], pod.labels)
                 and direction in p["spec"].get("policyTypes", ["Ingress"])]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(peers_key)
            if (not peers or any(_peer_matches(peer, pod.namespace, other) for peer in peers)) \
                    and _port_matches(rule.get("ports"), port, protocol):
                return True
    return False


def allowed(policies: list[dict], source: Pod | External, destination: Pod | External, port: int,
            protocol: str = "TCP") -> bool:
    """Whether a connection from `source` to `destination`:`port` is allowed."""
    out = not isinstance(source, Pod) or _allowed(policies, source, destination, port, protocol, "Egress")
    into = not isinstance(destination, Pod) or _allowed(policies, destination, source, port, protocol, "Ingress")
    return out and into
