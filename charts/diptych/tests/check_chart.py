"""Checks of the diptych Helm chart, with Helm's own library (helm-python-sdk: Helm 4 as a shared
library, no helm binary) and the Kubernetes schemas of kubernetes-validate, offline.

For every profile in ci/*-values.yaml (default, gpu, tls, minimal, cluster): `helm lint --strict`, render
as `helm install` would (values checked against values.schema.json), every manifest validated
against the Kubernetes schemas of the oldest and newest versions the chart supports, then what a
reviewer checks: non-root, read-only root, no privilege escalation, capabilities dropped, seccomp;
the three probes from gRPC health; GPU limits, the CUDA image and the CUDA execution provider only
with gpu.enabled; no Secret and no secret material anywhere in the output; DICOM admitted only
from the configured CIDRs; ports that agree between the configuration, the container and the
Services; in the cluster profile, one router Deployment, one StatefulSet per shard with the shard
in its pods' environment, the replica named by the pod and a volume claim per replica, routers
that list every replica by its stable name, three NATS nodes with JetStream, routes by stable
names and max_payload above 1 MiB, and the shards' gRPC admitted from the routers only; with
cluster.encoder.enabled, the encoder Deployment on its GPU nodes behind the Service that every
shard's remote_url names, its HorizontalPodAutoscaler on the custom metric that the chart's
prometheus-adapter rule derives from the queue-time histogram (rate of the sum over rate of the
count, per pod), the ServiceMonitor that feeds it, and the encoders' gRPC admitted from the
shards only. The
reviewer's checks are then run on broken copies of the manifests, each of which
they must reject, and the schema must refuse a list of bad values.

Usage: python check_chart.py CHART_DIR OUT_DIR
Writes OUT_DIR/<profile>/diptych.toml (the ConfigMap's configuration), args.json and env.json
(the server's command-line arguments and environment) and manifests.yaml; for the cluster profile
also one folder of these per router, shard and encoder workload (roles.json lists them) and nats.conf, for
service/tests/chart.rs to check against the server's own configuration parser. Exits 1 and names every problem when one is found.
"""

from __future__ import annotations

import copy
import json
import re
import sys
import tomllib
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

# The chart's kubeVersion floor (native gRPC probes are GA from 1.27) and the newest schemas.
KUBE_VERSIONS = ["1.27.0", kubernetes_validate.utils.latest_version()]
PROFILES = ["default", "gpu", "tls", "minimal", "cluster"]
RELEASE = "diptych-ci"
NAMESPACE = "pacs"

problems: list[str] = []
passed = 0


def check(ok: bool, what: str) -> None:
    global passed
    if ok:
        passed += 1
    else:
        problems.append(what)


def render(chart: helm.Chart, values: dict) -> dict[str, str]:
    return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def documents(rendered: dict[str, str]) -> list[dict]:
    docs = []
    for name, text in sorted(rendered.items()):
        if name.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def workloads(docs: list[dict]) -> list[dict]:
    """The StatefulSets and Deployments: every pod template of the release."""
    return [d for d in docs if d.get("kind") in ("StatefulSet", "Deployment")]


def component(d: dict) -> str:
    return d["metadata"]["labels"].get("app.kubernetes.io/component", "server")


def of_component(docs: list[dict], name: str) -> list[dict]:
    return [d for d in workloads(docs) if component(d) == name]


def server(docs: list[dict]) -> dict:
    """The workload that takes DICOM and the public API: the single node, or the routers."""
    return (of_component(docs, "router") or of_kind(docs, "StatefulSet"))[0]


def merged(chart_values: dict, override: dict) -> dict:
    out = copy.deepcopy(chart_values)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


# --- the reviewer's checks: each returns the problems it finds in one profile's manifests ---


def review_security(docs: list[dict], values: dict) -> list[str]:
    found = []
    for sts in workloads(docs):
        pod = sts["spec"]["template"]["spec"]
        psc = pod.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True:
            found.append("pod securityContext.runAsNonRoot is not true")
        if psc.get("runAsUser", 0) == 0:
            found.append("pod runs as uid 0")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            found.append("pod seccompProfile is not RuntimeDefault")
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(flag):
                found.append(f"pod sets {flag}")
        if any("hostPath" in v for v in pod.get("volumes", [])):
            found.append("pod mounts a hostPath")
        if pod.get("automountServiceAccountToken") is not False:
            found.append("pod mounts a service account token it does not need")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c.get("securityContext", {})
            name = c["name"]
            if sc.get("runAsNonRoot") is not True:
                found.append(f"container {name}: runAsNonRoot is not true")
            if sc.get("readOnlyRootFilesystem") is not True:
                found.append(f"container {name}: root file system is writable")
            if sc.get("allowPrivilegeEscalation") is not False:
                found.append(f"container {name}: allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                found.append(f"container {name}: privileged")
            caps = sc.get("capabilities", {})
            if caps.get("drop") != ["ALL"] or caps.get("add"):
                found.append(f"container {name}: capabilities are not exactly drop [ALL]")
            if sc.get("seccompProfile", {}).get("type") not in (None, "RuntimeDefault"):
                found.append(f"container {name}: seccompProfile is not RuntimeDefault")
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            tmp = mounts.get("/tmp")
            if not tmp or "emptyDir" not in volumes.get(tmp["name"], {}):
                found.append(f"container {name}: /tmp is not a writable emptyDir")
            if "/data" not in mounts and component(sts) != "encoder":
                # (The encoder role keeps nothing: it has no data folder.)
                found.append(f"container {name}: the data folder /data is not mounted")
    return found


def review_probes(docs: list[dict], values: dict) -> list[str]:
    found = []
    tls = values["grpc"]["tls"]["enabled"]
    for sts in workloads(docs):
        c = sts["spec"]["template"]["spec"]["containers"][0]
        if c["name"] != "diptych":
            continue  # NATS: review_cluster
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = c.get(kind)
            if not probe:
                found.append(f"{kind} missing")
                continue
            if component(sts) == "encoder":
                # The encoder's HTTP port: /readyz (SERVING once warm) for startup and
                # readiness, /healthz for liveness.
                path = values["http"]["livenessPath" if kind == "livenessProbe" else "readinessPath"]
                get = probe.get("httpGet", {})
                if get.get("port") not in ("http", ports.get("http")) or get.get("path") != path:
                    found.append(f"encoder {kind}: not {path} on the HTTP port: {probe}")
            elif tls:
                get = probe.get("httpGet", {})
                if get.get("port") not in ("http", ports.get("http")):
                    found.append(f"{kind}: with gRPC TLS it must ask the HTTP port, not {probe}")
            elif probe.get("grpc", {}).get("port") != ports.get("grpc"):
                found.append(f"{kind} is not gRPC health on the gRPC port ({probe})")
        startup = c.get("startupProbe", {})
        allowed = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
        if allowed < 120:
            found.append(f"startupProbe allows {allowed} s for the model load and log replay (< 120 s)")
    return found


def review_gpu(docs: list[dict], values: dict) -> list[str]:
    found = []
    for router in of_component(docs, "router"):
        for c in router["spec"]["template"]["spec"]["containers"]:
            if c["image"].rsplit(":", 1)[-1].endswith("-cuda") or any(
                k.endswith("/gpu") for part in ("limits", "requests") for k in c.get("resources", {}).get(part, {})
            ):
                found.append("a router with a GPU or the CUDA image: it runs no encoder")
    for sts in of_component(docs, "server") + of_component(docs, "shard") + of_component(docs, "encoder"):
        pod = sts["spec"]["template"]["spec"]
        # The encoder pods have GPU and placement values of their own.
        own = values["cluster"]["encoder"] if component(sts) == "encoder" else values
        gpu = own["gpu"]["enabled"]
        runtime_class = own["gpu"].get("runtimeClassName") if gpu else None
        if (pod.get("runtimeClassName") or None) != (runtime_class or None):
            found.append(f"{sts['metadata']['name']}: runtimeClassName {pod.get('runtimeClassName')!r}, expected {runtime_class!r}")
        for c in pod["containers"]:
            res = c.get("resources", {})
            gpu_keys = [k for part in ("limits", "requests") for k in res.get(part, {}) if k.endswith("/gpu")]
            provider = {e["name"]: e.get("value") for e in c.get("env", [])}.get("DIPTYCH_EXECUTION_PROVIDER")
            cuda_image = c["image"].rsplit(":", 1)[-1].endswith("-cuda")
            if gpu:
                if res.get("limits", {}).get("nvidia.com/gpu") != own["gpu"]["count"]:
                    found.append(f"gpu.enabled but the limits hold no nvidia.com/gpu: {res}")
                if provider != "cuda":
                    found.append(f"gpu.enabled but DIPTYCH_EXECUTION_PROVIDER is {provider!r}")
                if not cuda_image:
                    found.append(f"gpu.enabled but the image is {c['image']}")
            else:
                if gpu_keys:
                    found.append(f"GPU resources without gpu.enabled: {gpu_keys}")
                if provider != "cpu":
                    found.append(f"without a GPU DIPTYCH_EXECUTION_PROVIDER is {provider!r}")
                if cuda_image:
                    found.append(f"the CUDA image without gpu.enabled: {c['image']}")
        placement = {k: pod.get(k) for k in ("nodeSelector", "tolerations", "affinity")}
        for key, given in placement.items():
            if (own.get(key) or None) != (given or None):
                found.append(f"{sts['metadata']['name']}: {key} is {given!r}, the values say {own.get(key)!r}")
    return found


PEM = re.compile(r"-----BEGIN [A-Z ]+-----|PRIVATE KEY")
SECRET_ENV = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY", re.I)


def review_secrets(docs: list[dict], values: dict, text: str) -> list[str]:
    found = []
    for d in docs:
        if d["kind"] == "Secret":
            found.append(f"the chart creates a Secret: {d['metadata']['name']}")
        if d["kind"] != "ConfigMap" and ("data" in d or "stringData" in d):
            found.append(f"{d['kind']} {d['metadata']['name']} carries data")
    if PEM.search(text):
        found.append("PEM or private key material in the rendered output")
    for sts in workloads(docs):
        role = component(sts)
        pod = sts["spec"]["template"]["spec"]
        for c in pod["containers"]:
            for e in c.get("env", []):
                if SECRET_ENV.search(e["name"]) and "value" in e:
                    found.append(f"env {e['name']} holds a literal value, not a reference")
        named = {
            v["secret"]["secretName"]
            for v in pod.get("volumes", [])
            if "secret" in v
        }
        expected = set()
        if role in ("shard", "nats", "encoder"):
            # No DICOM, no tokens and no TLS of their own.
            pass
        elif values["grpc"]["tls"]["enabled"]:
            expected |= {values["grpc"]["tls"]["secretName"], values["grpc"]["tls"]["clientCASecretName"]}
        if values["dicom"]["tls"]["enabled"] and role in ("server", "router"):
            expected |= {values["dicom"]["tls"]["secretName"], values["dicom"]["tls"]["clientCASecretName"]}
        if values["auth"]["enabled"] and role in ("server", "router"):
            expected.add(values["auth"]["existingSecret"])
        expected.discard("")
        if named != expected:
            found.append(f"{role}: Secrets mounted {sorted(named)}, the values name {sorted(expected)}")
    for cm in of_kind(docs, "ConfigMap"):
        for key, body in cm.get("data", {}).items():
            if PEM.search(body):
                found.append(f"ConfigMap {key} holds key material")
    return found


def selects(selector: dict, labels: dict) -> bool:
    """Whether a LabelSelector (matchLabels, matchExpressions In/NotIn) selects `labels`."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        inside = labels.get(e["key"]) in e.get("values", [])
        if (e["operator"] == "In" and not inside) or (e["operator"] == "NotIn" and inside):
            return False
    return True


def review_network(docs: list[dict], values: dict) -> list[str]:
    found = []
    policies = of_kind(docs, "NetworkPolicy")
    if not values["networkPolicy"]["enabled"]:
        return ["a NetworkPolicy rendered while networkPolicy.enabled is false"] if policies else []
    sts = server(docs)
    labels = sts["spec"]["template"]["metadata"]["labels"]
    mine = [p for p in policies if selects(p["spec"]["podSelector"], labels)]
    others = [p for p in policies if p not in mine]
    if len(mine) != 1:
        return [f"{len(mine)} NetworkPolicies select the DICOM pods, expected 1"]
    for other in others:
        for rule in other["spec"].get("ingress", []):
            if any(p.get("port") in ("dicom", "dicom-tls") for p in rule.get("ports") or []):
                found.append(f"NetworkPolicy {other['metadata']['name']} admits DICOM")
    spec = mine[0]["spec"]
    if "Ingress" not in spec.get("policyTypes", []):
        found.append("the NetworkPolicy does not govern ingress")
    dicom_names = {"dicom", "dicom-tls"}
    dicom_numbers = {
        p["containerPort"]
        for p in sts["spec"]["template"]["spec"]["containers"][0].get("ports", [])
        if p["name"] in dicom_names
    }
    cidrs = values["networkPolicy"]["dicom"]["allowedCIDRs"]
    admitted = []
    for rule in spec.get("ingress", []):
        ports = rule.get("ports")
        covers_dicom = ports is None or any(
            p.get("port") in dicom_names or p.get("port") in dicom_numbers for p in ports
        )
        if not covers_dicom:
            continue
        peers = rule.get("from")
        if not peers:
            found.append(f"an ingress rule admits DICOM from any source: {rule}")
            continue
        for peer in peers:
            if set(peer) != {"ipBlock"} or peer["ipBlock"].get("except"):
                found.append(f"DICOM admitted from a peer that is not a configured CIDR: {peer}")
            else:
                admitted.append(peer["ipBlock"]["cidr"])
    if sorted(set(admitted)) != sorted(cidrs if values["dicom"]["enabled"] else []):
        found.append(f"DICOM admitted from {admitted}, configured {cidrs}")
    # Every DICOM port the container opens is admitted from the configured CIDRs (and no other).
    if values["dicom"]["enabled"] and cidrs:
        for name in sorted(n for n in dicom_names if any(p["name"] == n for p in sts["spec"]["template"]["spec"]["containers"][0].get("ports", []))):
            admitting = [
                rule for rule in spec.get("ingress", [])
                if any(p.get("port") == name for p in rule.get("ports") or [])
            ]
            if not admitting:
                found.append(f"the NetworkPolicy does not admit the {name} port")
    return found


def review_ports(docs: list[dict], values: dict, config: dict) -> list[str]:
    found = []
    sts = server(docs)
    c = sts["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    dicom_tls = values["dicom"]["tls"]["enabled"]
    clustered = values["cluster"]["enabled"]

    def port_of(addr: str) -> int:
        return int(addr.rsplit(":", 1)[1])

    if port_of(config["grpc"]["addr"]) != ports.get("grpc") or ports.get("grpc") != values["grpc"]["port"]:
        found.append(f"gRPC: config {config['grpc']['addr']}, container {ports.get('grpc')}")
    http_addr = config.get("http", {}).get("addr", "")
    if clustered:
        pass  # routers serve no HTTP port; review_cluster checks the shards'
    elif not http_addr or port_of(http_addr) != ports.get("http") or ports.get("http") != values["http"]["port"]:
        found.append(f"HTTP: config {http_addr!r}, container {ports.get('http')}")
    # The plain port unless dicom.plain is false, and the DICOM-TLS port beside it while TLS is on.
    dicom_plain = values["dicom"]["plain"]
    want = {}
    if dicom_plain:
        want["dicom"] = values["dicom"]["port"]
    if dicom_tls:
        want["dicom-tls"] = values["dicom"]["tls"]["port"]
    dicom_names = list(want)
    if values["dicom"]["enabled"]:
        opened = {name: ports.get(name) for name in ("dicom", "dicom-tls") if name in ports}
        if opened != want:
            found.append(f"DICOM container ports {opened}, expected {want}")
        if port_of(config["dicom"]["addr"]) != values["dicom"]["port"]:
            found.append(f"DICOM: config addr {config['dicom']['addr']}, values {values['dicom']['port']}")
        if port_of(config["dicom"].get("tls_addr", ":0")) != values["dicom"]["tls"]["port"]:
            found.append(f"DICOM-TLS: config tls_addr {config['dicom'].get('tls_addr')}, values {values['dicom']['tls']['port']}")
        if config["dicom"].get("plain", True) != dicom_plain:
            found.append("dicom.plain in the configuration does not follow the values")
        if ("tls_cert" in config["dicom"]) != dicom_tls:
            found.append("DICOM TLS in the configuration does not follow dicom.tls.enabled")
    elif "dicom" in ports or "dicom-tls" in ports or config["dicom"]["enabled"]:
        found.append("DICOM served while dicom.enabled is false")
    if ("tls_cert" in config["grpc"]) != values["grpc"]["tls"]["enabled"]:
        found.append("gRPC TLS in the configuration does not follow grpc.tls.enabled")
    if "execution_provider" in config.get("encoder", {}):
        found.append("the execution provider is set twice (configuration and environment)")
    # Every file the configuration names lies on a mounted volume.
    mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
    for section in (config, config["grpc"], config["dicom"], config.get("auth", {})):
        for key, value in section.items():
            if isinstance(value, str) and key in ("tls_cert", "tls_key", "tls_client_ca", "tokens_file"):
                if not any(value.startswith(m.rstrip("/") + "/") for m in mounts):
                    found.append(f"{key} = {value} is on no mounted volume")
    # Services: every targetPort names a container port; the expected Services exist.
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    base = sts["metadata"]["name"].removesuffix("-router")
    expected = {base, f"{base}-http", f"{base}-headless"} | ({f"{base}-dicom"} if values["dicom"]["enabled"] else set())
    if clustered:
        expected = (expected - {f"{base}-headless"}) | {f"{base}-shard-headless"}
        expected |= set() if values["cluster"]["nats"]["url"] else {f"{base}-nats-headless"}
        expected |= {f"{base}-encoder"} if values["cluster"]["encoder"]["enabled"] else set()
    if set(services) != expected:
        found.append(f"Services {sorted(services)}, expected {sorted(expected)}")
    for name, svc in services.items():
        chosen = [w for w in workloads(docs) if selects({"matchLabels": svc["spec"]["selector"]}, w["spec"]["template"]["metadata"]["labels"])]
        if not chosen:
            found.append(f"Service {name} selects no pod")
        for w in chosen:
            opened = {p["name"] for c in w["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
            for p in svc["spec"]["ports"]:
                if p["targetPort"] not in opened:
                    found.append(f"Service {name} targets {p['targetPort']}, which {w['metadata']['name']} does not open")
    if f"{base}-dicom" in services:
        dicom_ports = services[f"{base}-dicom"]["spec"]["ports"]
        if [p["name"] for p in dicom_ports] != dicom_names:
            found.append(f"DICOM Service ports {dicom_ports}, expected {dicom_names}")
        if dicom_tls and [p["port"] for p in dicom_ports if p["name"] == "dicom-tls"] != [values["dicom"]["tls"]["port"]]:
            found.append(f"the DICOM Service does not expose the DICOM-TLS port: {dicom_ports}")
    if services.get(f"{base}", {}).get("spec", {}).get("ports", [{}])[0].get("port") != 50051 and values["grpc"]["port"] == 50051:
        found.append("the gRPC Service is not on 50051")
    if services.get(f"{base}-http", {}).get("spec", {}).get("ports", [{}])[0].get("port") != values["http"]["port"]:
        found.append("the HTTP Service is not on http.port")
    return found


def review_storage(docs: list[dict], values: dict) -> list[str]:
    found = []
    sts = of_kind(docs, "StatefulSet")[0]
    spec = sts["spec"]
    if spec.get("replicas") != 1:
        found.append(f"replicas {spec.get('replicas')}: the index is one node")
    claims = spec.get("volumeClaimTemplates", [])
    volumes = {v["name"]: v for v in spec["template"]["spec"].get("volumes", [])}
    if values["persistence"]["enabled"]:
        if [c["metadata"]["name"] for c in claims] != ["data"]:
            found.append(f"persistence.enabled but the claims are {claims}")
        elif claims[0]["spec"]["resources"]["requests"]["storage"] != values["persistence"]["size"]:
            found.append("the data claim's size is not persistence.size")
        if "data" in volumes:
            found.append("persistence.enabled but data is also a pod volume")
    elif claims or "emptyDir" not in volumes.get("data", {}):
        found.append("without persistence, data must be an emptyDir and no claim")
    return found


def review_monitoring(docs: list[dict], values: dict) -> list[str]:
    # (The encoders' own ServiceMonitor: review_encoder.)
    monitors = [m for m in of_kind(docs, "ServiceMonitor") if component(m) != "encoder"]
    if not values["metrics"]["serviceMonitor"]["enabled"]:
        return ["a ServiceMonitor without metrics.serviceMonitor.enabled"] if monitors else []
    if len(monitors) != 1:
        return [f"{len(monitors)} ServiceMonitors"]
    found = []
    spec = monitors[0]["spec"]
    selector = spec["selector"]["matchLabels"]
    chosen = [
        s for s in of_kind(docs, "Service")
        if all(s["metadata"]["labels"].get(k) == v for k, v in selector.items())
    ]
    if len(chosen) != 1 or not chosen[0]["metadata"]["name"].endswith("-http"):
        found.append(f"the ServiceMonitor selects {[s['metadata']['name'] for s in chosen]}")
    elif [e.get("port") for e in spec["endpoints"]] != [p["name"] for p in chosen[0]["spec"]["ports"]]:
        found.append("the ServiceMonitor scrapes a port the HTTP Service does not name")
    if [e.get("path") for e in spec["endpoints"]] != ["/metrics"]:
        found.append("the ServiceMonitor does not scrape /metrics")
    for k, v in values["metrics"]["serviceMonitor"]["labels"].items():
        if monitors[0]["metadata"]["labels"].get(k) != v:
            found.append(f"the ServiceMonitor lacks the label {k}={v}")
    return found


def config_of(docs: list[dict], workload: dict, key: str = "diptych.toml") -> str:
    """The configuration file a workload's pods mount, from its ConfigMap."""
    volumes = workload["spec"]["template"]["spec"]["volumes"]
    name = [v["configMap"]["name"] for v in volumes if v["name"] == "config"][0]
    return [m for m in of_kind(docs, "ConfigMap") if m["metadata"]["name"] == name][0]["data"][key]


def server_config(docs: list[dict]) -> dict:
    return tomllib.loads(config_of(docs, server(docs)))


def env_of(c: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def review_cluster(docs: list[dict], values: dict) -> list[str]:
    """The cluster mode: routers, one StatefulSet per shard with a volume per replica, NATS."""
    found = []
    cl = values["cluster"]
    routers = of_component(docs, "router")
    shards = of_component(docs, "shard")
    nats = of_component(docs, "nats")
    if [d["kind"] for d in routers] != ["Deployment"] or routers[0]["spec"]["replicas"] != cl["router"]["replicas"]:
        return [f"expected one router Deployment of {cl['router']['replicas']} replicas: {[d['kind'] for d in routers]}"]
    if of_component(docs, "server"):
        found.append("the single node's StatefulSet is rendered in the cluster mode")
    found += review_encoder(docs, values)
    # No two workloads select each other's pods.
    for a in workloads(docs):
        for b in workloads(docs):
            if a is not b and selects(a["spec"]["selector"], b["spec"]["template"]["metadata"]["labels"]):
                found.append(f"{a['metadata']['name']} selects the pods of {b['metadata']['name']}")
    router = tomllib.loads(config_of(docs, routers[0]))
    rc = router.get("cluster", {})
    if rc.get("role") != "router" or rc.get("shards") != cl["shards"]:
        found.append(f"router [cluster] {rc}")
    # The shards: one StatefulSet per shard, the shard in the pods' environment, the replica
    # name from the pod's stable name, one volume claim per replica.
    by_shard = {}
    headless = {s["metadata"]["name"]: s for s in of_kind(docs, "Service") if s["spec"].get("clusterIP") == "None"}
    for sts in shards:
        c = sts["spec"]["template"]["spec"]["containers"][0]
        env = env_of(c)
        shard = int(env.get("DIPTYCH_CLUSTER_SHARD", -1))
        if shard in by_shard:
            found.append(f"two StatefulSets serve shard {shard}")
        by_shard[shard] = sts
        if sts["kind"] != "StatefulSet" or sts["spec"]["replicas"] != cl["replicas"]:
            found.append(f"{sts['metadata']['name']}: {sts['kind']} of {sts['spec'].get('replicas')} replicas, expected {cl['replicas']}")
        if env.get("DIPTYCH_CLUSTER_REPLICA") != {"fieldRef": {"fieldPath": "metadata.name"}}:
            found.append(f"{sts['metadata']['name']}: the replica name is not the pod's name: {env.get('DIPTYCH_CLUSTER_REPLICA')}")
        claims = [t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])]
        if values["persistence"]["enabled"] and claims != ["data"]:
            found.append(f"{sts['metadata']['name']}: claims {claims}, expected one data claim per replica")
        governing = headless.get(sts["spec"]["serviceName"])
        if not governing or not selects({"matchLabels": governing["spec"]["selector"]}, sts["spec"]["template"]["metadata"]["labels"]):
            found.append(f"{sts['metadata']['name']}: no headless Service {sts['spec']['serviceName']} selects its pods")
        shard_config = tomllib.loads(config_of(docs, sts))
        sc = shard_config.get("cluster", {})
        if sc.get("role") != "shard" or sc.get("shards") != cl["shards"] or sc.get("nats_url") != rc.get("nats_url"):
            found.append(f"{sts['metadata']['name']}: [cluster] {sc}")
        if shard_config["dicom"]["enabled"]:
            found.append(f"{sts['metadata']['name']}: a shard listens for DICOM")
        if {p["name"] for p in c["ports"]} != {"grpc", "http"}:
            found.append(f"{sts['metadata']['name']}: ports {c['ports']}")
    if sorted(by_shard) != list(range(cl["shards"])):
        found.append(f"shards served {sorted(by_shard)}, expected 0..{cl['shards'] - 1}")
    # The router reaches every replica of every shard by its stable name, in shard order.
    addrs = rc.get("shard_addrs", [])
    if len(addrs) != cl["shards"]:
        found.append(f"shard_addrs has {len(addrs)} entries for {cl['shards']} shards")
    for shard, entry in enumerate(addrs):
        sts = by_shard.get(shard)
        if not sts:
            continue
        port = [p["containerPort"] for p in sts["spec"]["template"]["spec"]["containers"][0]["ports"] if p["name"] == "grpc"][0]
        want = [
            f"http://{sts['metadata']['name']}-{r}.{sts['spec']['serviceName']}.{NAMESPACE}.svc:{port}"
            for r in range(sts["spec"]["replicas"])
        ]
        if entry.split("|") != want:
            found.append(f"shard_addrs[{shard}] = {entry}, expected {'|'.join(want)}")
    # NATS: three JetStream nodes routed by their stable names, max_payload above 1 MiB; or the
    # given URL and nothing deployed.
    if cl["nats"]["url"]:
        if nats:
            found.append("a NATS StatefulSet although cluster.nats.url names one")
        if rc.get("nats_url") != cl["nats"]["url"]:
            found.append(f"nats_url {rc.get('nats_url')}, the values say {cl['nats']['url']}")
        return found
    if len(nats) != 1 or nats[0]["kind"] != "StatefulSet" or nats[0]["spec"]["replicas"] != 3:
        return found + [f"expected a NATS StatefulSet of three: {[(n['kind'], n['spec'].get('replicas')) for n in nats]}"]
    n = nats[0]
    conf = config_of(docs, n, "nats.conf")
    service = n["spec"]["serviceName"]
    pods = [f"{n['metadata']['name']}-{i}.{service}.{NAMESPACE}.svc" for i in range(3)]
    if service not in headless:
        found.append(f"NATS: no headless Service {service}")
    if not re.search(r"^jetstream\s*\{", conf, re.M):
        found.append("NATS: JetStream is not enabled")
    payload = re.search(r"^max_payload:\s*(\d+)", conf, re.M)
    if not payload or not (1 << 20) < int(payload.group(1)) <= (64 << 20) or int(payload.group(1)) != cl["nats"]["maxPayload"]:
        found.append(f"NATS: max_payload {payload and payload.group(1)} is not cluster.nats.maxPayload above 1 MiB")
    routes = re.findall(r'"nats://([^":]+):(\d+)"', conf)
    if routes != [(p, "6222") for p in pods]:
        found.append(f"NATS: routes {routes}, expected the three nodes' stable names on 6222")
    if rc.get("nats_url") != ",".join(f"nats://{p}:4222" for p in pods):
        found.append(f"NATS: the routers' nats_url {rc.get('nats_url')} is not the three nodes")
    if rc.get("stream_replicas") != cl["nats"]["streamReplicas"] or cl["nats"]["streamReplicas"] > 3:
        found.append(f"stream_replicas {rc.get('stream_replicas')}")
    nc = n["spec"]["template"]["spec"]["containers"][0]
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        if nc.get(kind, {}).get("httpGet", {}).get("port") != "monitor":
            found.append(f"NATS {kind} is not on the monitoring port")
    if [t["metadata"]["name"] for t in n["spec"].get("volumeClaimTemplates", [])] != ["data"]:
        found.append("NATS: no volume claim per node")
    if values["networkPolicy"]["enabled"]:
        policies = {p["metadata"]["name"]: p for p in of_kind(docs, "NetworkPolicy")}
        shard_policy = [p for p in policies.values() if selects(p["spec"]["podSelector"], shards[0]["spec"]["template"]["metadata"]["labels"])]
        router_labels = routers[0]["spec"]["template"]["metadata"]["labels"]
        for p in shard_policy:
            for rule in p["spec"].get("ingress", []):
                if any(x.get("port") == "grpc" for x in rule.get("ports") or []):
                    peers = rule.get("from") or [{}]
                    if not all("podSelector" in x and selects(x["podSelector"], router_labels) and set(x) == {"podSelector"} for x in peers):
                        found.append(f"the shards' gRPC (open without a token) is admitted from {peers}, not the routers only")
        if len(shard_policy) != 1:
            found.append(f"{len(shard_policy)} NetworkPolicies select the shards")
    return found


def review_encoder(docs: list[dict], values: dict) -> list[str]:
    """The encoder role: a Deployment serving the shards' remote_url, autoscaled on the metric
    that the chart's prometheus-adapter rule derives from its queue-time histogram."""
    found = []
    e = values["cluster"]["encoder"]
    encoders = of_component(docs, "encoder")
    hpas = of_kind(docs, "HorizontalPodAutoscaler")
    shards = of_component(docs, "shard")
    shard_urls = {tomllib.loads(config_of(docs, s)).get("encoder", {}).get("remote_url") for s in shards}
    if not e["enabled"]:
        if encoders or hpas:
            found.append("an encoder Deployment or autoscaler while cluster.encoder.enabled is false")
        if shard_urls != {None}:
            found.append(f"shards encode remotely ({shard_urls}) without the encoder")
        return found
    if [d["kind"] for d in encoders] != ["Deployment"]:
        return [f"expected one encoder Deployment: {[d['kind'] for d in encoders]}"]
    dep = encoders[0]
    name = dep["metadata"]["name"]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    if set(ports) != {"grpc", "http"}:
        found.append(f"{name}: ports {ports}, expected grpc and http")
    config = tomllib.loads(config_of(docs, dep))
    if config.get("cluster", {}).get("role") != "encoder" or config["dicom"]["enabled"]:
        found.append(f"{name}: [cluster] {config.get('cluster')}, dicom {config['dicom']['enabled']}")
    if config.get("encoder", {}).get("remote_url"):
        found.append(f"{name}: an encoder with a remote_url of its own")
    if "http" not in config or int(config["http"]["addr"].rsplit(":", 1)[1]) != ports.get("http"):
        found.append(f"{name}: [http] {config.get('http')} is not its http port {ports.get('http')}")
    # The shards hand their batches to the encoder Service, which selects these pods.
    services = [s for s in of_kind(docs, "Service") if component(s) == "encoder"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    if len(services) != 1 or not selects({"matchLabels": services[0]["spec"]["selector"]}, labels):
        return found + [f"no one Service selects the encoder pods: {[s['metadata']['name'] for s in services]}"]
    svc = services[0]
    grpc_port = [p["port"] for p in svc["spec"]["ports"] if p["targetPort"] == "grpc"]
    want = f"http://{svc['metadata']['name']}.{NAMESPACE}.svc:{grpc_port[0] if grpc_port else '?'}"
    if shard_urls != {want}:
        found.append(f"the shards' [encoder] remote_url {sorted(map(str, shard_urls))}, expected {want}")
    for w in workloads(docs):
        if w is not dep and selects({"matchLabels": svc["spec"]["selector"]}, w["spec"]["template"]["metadata"]["labels"]):
            found.append(f"the encoder Service also selects {w['metadata']['name']}")
    # The autoscaler: on this Deployment, on the adapter rule's metric, the CPU as fallback.
    a = e["autoscaling"]
    if not a["enabled"]:
        if hpas or dep["spec"].get("replicas") != e["replicas"]:
            found.append(f"without autoscaling: {len(hpas)} autoscalers, replicas {dep['spec'].get('replicas')}")
        return found
    if "replicas" in dep["spec"]:
        found.append(f"{name} sets replicas although its autoscaler owns them")
    if len(hpas) != 1:
        return found + [f"{len(hpas)} HorizontalPodAutoscalers, expected one"]
    hpa = hpas[0]["spec"]
    target = hpa["scaleTargetRef"]
    if (target.get("apiVersion"), target.get("kind"), target.get("name")) != ("apps/v1", "Deployment", name):
        found.append(f"the autoscaler scales {target}, not {name}")
    if (hpa.get("minReplicas"), hpa.get("maxReplicas")) != (a["minReplicas"], a["maxReplicas"]):
        found.append(f"the autoscaler's bounds {hpa.get('minReplicas')}..{hpa.get('maxReplicas')}")
    pods = [m["pods"] for m in hpa.get("metrics", []) if m.get("type") == "Pods"]
    if len(pods) != 1 or pods[0]["metric"]["name"] != a["metricName"] or pods[0]["target"] != {
        "type": "AverageValue", "averageValue": str(a["targetQueueSeconds"])
    }:
        found.append(f"the autoscaler's Pods metric {pods}, expected {a['metricName']} averaging {a['targetQueueSeconds']}")
    cpu = [m["resource"] for m in hpa.get("metrics", []) if m.get("type") == "Resource"]
    want_cpu = [{"name": "cpu", "target": {"type": "Utilization", "averageUtilization": a["targetCPUUtilizationPercentage"]}}]
    if cpu != (want_cpu if a["targetCPUUtilizationPercentage"] else []):
        found.append(f"the autoscaler's CPU metric {cpu}")
    if a["targetCPUUtilizationPercentage"] and "cpu" not in c.get("resources", {}).get("requests", {}):
        found.append("CPU utilisation without a CPU request")
    # The adapter rule derives that metric per pod from the encoder graph's queue histogram.
    rules = [m for m in of_kind(docs, "ConfigMap") if m["metadata"]["name"] == f"{name}-adapter-rule"]
    if len(rules) != 1:
        return found + ["no ConfigMap with the prometheus-adapter rule"]
    rule = yaml.safe_load(rules[0]["data"]["config.yaml"])["rules"]
    series = "diptych_encoder_queue_duration_seconds"
    window = f"[{a['rateWindow']}]"
    if len(rule) != 1:
        return found + [f"adapter rules {rule}"]
    r = rule[0]
    query = r.get("metricsQuery", "")
    if r.get("name", {}).get("as") != a["metricName"]:
        found.append(f"the adapter rule serves {r.get('name')}, the autoscaler reads {a['metricName']}")
    if r.get("resources", {}).get("overrides", {}).get("pod") != {"resource": "pod"}:
        found.append("the adapter rule does not map the pod label to pods")
    for part in (f"rate({series}_sum{{<<.LabelMatchers>>,graph=\"encoder\"}}{window})",
                 f"rate({series}_count{{<<.LabelMatchers>>,graph=\"encoder\"}}{window})", " / "):
        if part not in query:
            found.append(f"the adapter rule's query lacks {part}: {query}")
    if not -1 < query.find("_sum{") < query.find(" / ") < query.find("_count{"):
        found.append(f"the adapter rule's query is not rate(sum) / rate(count): {query}")
    if not r.get("seriesQuery", "").startswith(f"{series}_count{{"):
        found.append(f"the adapter rule discovers {r.get('seriesQuery')}")
    # Prometheus must scrape the encoder pods for the metric to exist.
    monitors = [m for m in of_kind(docs, "ServiceMonitor") if component(m) == "encoder"]
    if values["metrics"]["serviceMonitor"]["enabled"]:
        chosen = [
            s["metadata"]["name"] for s in of_kind(docs, "Service")
            if len(monitors) == 1 and selects(monitors[0]["spec"]["selector"], s["metadata"]["labels"])
        ]
        if chosen != [svc["metadata"]["name"]]:
            found.append(f"the encoders' ServiceMonitor selects {chosen}")
        elif [(x.get("port"), x.get("path")) for x in monitors[0]["spec"]["endpoints"]] != [("http", "/metrics")]:
            found.append("the encoders' ServiceMonitor does not scrape /metrics on the http port")
    elif monitors:
        found.append("an encoder ServiceMonitor without metrics.serviceMonitor.enabled")
    # The encoders' gRPC answers without a token: admitted from the shards only.
    if values["networkPolicy"]["enabled"]:
        policies = [p for p in of_kind(docs, "NetworkPolicy") if selects(p["spec"]["podSelector"], labels)]
        shard_labels = shards[0]["spec"]["template"]["metadata"]["labels"]
        router_labels = of_component(docs, "router")[0]["spec"]["template"]["metadata"]["labels"]
        if len(policies) != 1:
            found.append(f"{len(policies)} NetworkPolicies select the encoders")
        for p in policies:
            for rule_ in p["spec"].get("ingress", []):
                if any(x.get("port") in ("grpc", ports.get("grpc")) for x in rule_.get("ports") or [{"port": "grpc"}]):
                    peers = rule_.get("from") or [{}]
                    if not all(set(x) == {"podSelector"} and selects(x["podSelector"], shard_labels)
                               and not selects(x["podSelector"], router_labels) for x in peers):
                        found.append(f"the encoders' gRPC (open without a token) is admitted from {peers}, not the shards only")
    return found


def review(docs: list[dict], values: dict, text: str) -> list[str]:
    config = server_config(docs)
    return (
        review_security(docs, values)
        + review_probes(docs, values)
        + review_gpu(docs, values)
        + review_secrets(docs, values, text)
        + review_network(docs, values)
        + review_ports(docs, values, config)
        + (review_cluster(docs, values) if values["cluster"]["enabled"] else review_storage(docs, values))
        + review_monitoring(docs, values)
    )


# --- broken copies that the review must reject: proves each check can fail ---


def container(docs):
    return server(docs)["spec"]["template"]["spec"]["containers"][0]


def pod(docs):
    return server(docs)["spec"]["template"]["spec"]


BREAKAGES = {
    "root allowed": lambda d: pod(d)["securityContext"].pop("runAsNonRoot"),
    "uid 0": lambda d: pod(d)["securityContext"].update(runAsUser=0),
    "writable root": lambda d: container(d)["securityContext"].update(readOnlyRootFilesystem=False),
    "privilege escalation": lambda d: container(d)["securityContext"].update(allowPrivilegeEscalation=True),
    "capability added": lambda d: container(d)["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
    "no seccomp": lambda d: pod(d)["securityContext"].pop("seccompProfile"),
    "no /tmp": lambda d: container(d).update(
        volumeMounts=[m for m in container(d)["volumeMounts"] if m["mountPath"] != "/tmp"]
    ),
    "no liveness probe": lambda d: container(d).pop("livenessProbe"),
    "readiness on a TCP socket": lambda d: container(d).update(readinessProbe={"tcpSocket": {"port": 50051}}),
    "short startup": lambda d: container(d)["startupProbe"].update(failureThreshold=2),
    "GPU limit without gpu.enabled": lambda d: container(d)["resources"]["limits"].update({"nvidia.com/gpu": 1}),
    "CUDA provider without gpu.enabled": lambda d: container(d)["env"][0].update(value="cuda"),
    "a Secret": lambda d: d.append(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "stringData": {"token": "t"}}
    ),
    "a token in env": lambda d: container(d)["env"].append({"name": "DIPTYCH_ADMIN_TOKEN", "value": "hunter2"}),
    "DICOM open to all": lambda d: of_kind(d, "NetworkPolicy")[0]["spec"]["ingress"].append(
        {"ports": [{"port": "dicom", "protocol": "TCP"}]}
    ),
    "DICOM-TLS open to all": lambda d: of_kind(d, "NetworkPolicy")[0]["spec"]["ingress"].append(
        {"ports": [{"port": "dicom-tls", "protocol": "TCP"}]}
    ),
    "DICOM from a pod selector": lambda d: of_kind(d, "NetworkPolicy")[0]["spec"]["ingress"].append(
        {"ports": [{"port": 11112}], "from": [{"podSelector": {}}]}
    ),
    "a port that nothing opens": lambda d: of_kind(d, "Service")[1]["spec"]["ports"][0].update(targetPort="grpcs"),
    "two replicas": lambda d: of_kind(d, "StatefulSet")[0]["spec"].update(replicas=2),
}


def named(docs, name):
    return [d for d in docs if d["metadata"]["name"].endswith(name)][0]


def set_env(workload, name, value):
    for e in workload["spec"]["template"]["spec"]["containers"][0]["env"]:
        if e["name"] == name:
            e.pop("valueFrom", None)
            e["value"] = value


def edit_config(docs, workload_name, key, edit):
    name = config_of_name(named(workloads(docs), workload_name))
    cm = [m for m in of_kind(docs, "ConfigMap") if m["metadata"]["name"] == name][0]
    cm["data"][key] = edit(cm["data"][key])


def config_of_name(workload):
    return [v["configMap"]["name"] for v in workload["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"][0]


def shard_policy(docs):
    return [p for p in of_kind(docs, "NetworkPolicy") if p["metadata"]["name"].endswith("-shard")][0]


CLUSTER_BREAKAGES = {
    "two StatefulSets for one shard": lambda d: set_env(named(workloads(d), "-shard-1"), "DIPTYCH_CLUSTER_SHARD", "0"),
    "one replica name for every pod": lambda d: set_env(named(workloads(d), "-shard-0"), "DIPTYCH_CLUSTER_REPLICA", "0"),
    "shard replicas without a volume each": lambda d: named(workloads(d), "-shard-2")["spec"].pop("volumeClaimTemplates"),
    "a router that misses a replica": lambda d: edit_config(
        d, "-router", "diptych.toml", lambda t: re.sub(r"\|http://diptych-ci-shard-1-1[^\"|]*", "", t)
    ),
    "NATS at its 1 MiB default": lambda d: edit_config(
        d, "-nats", "nats.conf", lambda t: re.sub(r"max_payload: \d+", "max_payload: 1048576", t)
    ),
    "NATS without JetStream": lambda d: edit_config(d, "-nats", "nats.conf", lambda t: t.replace("jetstream {", "leafnodes {")),
    "NATS of one node": lambda d: named(workloads(d), "-nats")["spec"].update(replicas=1),
    "the shards' gRPC open to all": lambda d: shard_policy(d)["spec"]["ingress"][0].pop("from"),
    "DICOM admitted to the shards": lambda d: shard_policy(d)["spec"]["ingress"].append(
        {"ports": [{"port": "dicom"}], "from": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]}
    ),
    "a router with a GPU": lambda d: container(d)["resources"]["limits"].update({"nvidia.com/gpu": 1}),
    "a router selecting every pod": lambda d: named(workloads(d), "-router")["spec"]["selector"]["matchLabels"].pop(
        "app.kubernetes.io/component"
    ),
    "a shard pod as root": lambda d: named(workloads(d), "-shard-0")["spec"]["template"]["spec"]["securityContext"].update(runAsUser=0),
    "a writable NATS root": lambda d: named(workloads(d), "-nats")["spec"]["template"]["spec"]["containers"][0]["securityContext"].update(
        readOnlyRootFilesystem=False
    ),
    "an encoder without its GPU": lambda d: encoder(d)["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"].pop(
        "nvidia.com/gpu"
    ),
    "an encoder on the CPU image": lambda d: encoder(d)["spec"]["template"]["spec"]["containers"][0].update(image="r/diptych:1"),
    "an encoder off the GPU nodes": lambda d: encoder(d)["spec"]["template"]["spec"].pop("tolerations"),
    "an encoder without its RuntimeClass": lambda d: encoder(d)["spec"]["template"]["spec"].pop("runtimeClassName"),
    "an encoder ready on gRPC health": lambda d: encoder(d)["spec"]["template"]["spec"]["containers"][0].update(
        readinessProbe={"grpc": {"port": 50051}}
    ),
    "an encoder as root": lambda d: encoder(d)["spec"]["template"]["spec"]["securityContext"].update(runAsUser=0),
    "a shard encoding itself": lambda d: edit_config(
        d, "-shard-1", "diptych.toml", lambda t: re.sub(r"remote_url = .*\n", "", t)
    ),
    "a shard calling another encoder": lambda d: edit_config(
        d, "-shard-0", "diptych.toml", lambda t: t.replace("-encoder.pacs.svc", "-encoder.other.svc")
    ),
    "an encoder Deployment with fixed replicas": lambda d: encoder(d)["spec"].update(replicas=3),
    "an autoscaler on another Deployment": lambda d: hpa(d)["scaleTargetRef"].update(name="diptych-ci-router"),
    "an autoscaler on a metric nobody serves": lambda d: hpa(d)["metrics"][0]["pods"]["metric"].update(name="queue_seconds"),
    "an autoscaler on a total, not an average": lambda d: hpa(d)["metrics"][0]["pods"].update(
        target={"type": "Value", "value": "0.02"}
    ),
    "an autoscaler without its CPU fallback": lambda d: hpa(d)["metrics"].pop(1),
    "an adapter rule on the decoder's queue": lambda d: edit_named_config(
        d, "-encoder-adapter-rule", "config.yaml", lambda t: t.replace('graph="encoder"', 'graph="decoder"')
    ),
    "an adapter rule serving the sum alone": lambda d: edit_named_config(
        d, "-encoder-adapter-rule", "config.yaml", lambda t: t.split("\n      / ")[0] + "\n"
    ),
    "no adapter rule": lambda d: d.remove(named(of_kind(d, "ConfigMap"), "-encoder-adapter-rule")),
    "the encoders not scraped": lambda d: d.remove(named(of_kind(d, "ServiceMonitor"), "-encoder")),
    "the encoders' gRPC open to all": lambda d: encoder_policy(d)["spec"]["ingress"][0].pop("from"),
    "the encoders' gRPC open to the routers": lambda d: encoder_policy(d)["spec"]["ingress"][0]["from"].append(
        {"podSelector": {"matchLabels": {"app.kubernetes.io/component": "router"}}}
    ),
}


def encoder(docs):
    return named(workloads(docs), "-encoder")


def hpa(docs):
    return of_kind(docs, "HorizontalPodAutoscaler")[0]["spec"]


def encoder_policy(docs):
    return [p for p in of_kind(docs, "NetworkPolicy") if p["metadata"]["name"].endswith("-encoder")][0]


def edit_named_config(docs, name, key, edit):
    cm = named(of_kind(docs, "ConfigMap"), name)
    cm["data"][key] = edit(cm["data"][key])


def write_role(dest: Path, workload: dict, docs: list[dict]) -> None:
    """One diptych workload's configuration file, command line and environment, the pod name
    filled in where the environment takes it from the pod (the last replica's)."""
    dest.mkdir(parents=True, exist_ok=True)
    c = workload["spec"]["template"]["spec"]["containers"][0]
    # (An autoscaled Deployment names no replicas: its first pod's ordinal stands in.)
    pod_name = f"{workload['metadata']['name']}-{workload['spec'].get('replicas', 1) - 1}"
    env = {}
    for e in c["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        elif e.get("valueFrom") == {"fieldRef": {"fieldPath": "metadata.name"}}:
            env[e["name"]] = pod_name
    (dest / "diptych.toml").write_text(config_of(docs, workload))
    (dest / "args.json").write_text(json.dumps(c["args"]))
    (dest / "env.json").write_text(json.dumps(env))


def main() -> int:
    chart_dir = Path(sys.argv[1])
    out = Path(sys.argv[2])
    profiles = {p: chart_dir / "ci" / f"{p}-values.yaml" for p in PROFILES}
    for p, path in profiles.items():
        check(path.is_file(), f"profile {p}: {path} missing")
    with helm.Chart.load(chart_dir) as chart:
        defaults = chart.values
        for profile, path in profiles.items():
            override = yaml.safe_load(path.read_text()) or {}
            values = merged(defaults, override)
            lint = helm.lint(chart_dir, override, strict=True, namespace=NAMESPACE)
            bad = [m for m in lint["messages"] if m["severity"] >= 2] + lint["errors"]
            check(not bad, f"{profile}: helm lint --strict: {bad}")
            rendered = render(chart, override)
            docs = documents(rendered)
            text = "\n".join(rendered.values())
            kinds = sorted(d["kind"] for d in docs)
            check("StatefulSet" in kinds and "ConfigMap" in kinds, f"{profile}: rendered {kinds}")
            for d in docs:
                for version in KUBE_VERSIONS:
                    where = f"{profile}: {d['kind']} {d['metadata']['name']} (Kubernetes {version})"
                    try:
                        kubernetes_validate.validate(d, version, strict=True)
                        check(True, where)
                    except kubernetes_validate.ValidationError as e:
                        path_ = ".".join(str(x) for x in e.path)
                        check(False, f"{where}: {path_}: {e.message}")
                    except SchemaNotFoundError:
                        # A custom resource: only the Prometheus Operator's ServiceMonitor is expected.
                        check(
                            d["kind"] == "ServiceMonitor" and d["apiVersion"] == "monitoring.coreos.com/v1",
                            f"{where}: no schema for {d['apiVersion']} {d['kind']}",
                        )
            found = review(docs, values, text)
            check(not found, f"{profile}: " + "; ".join(found))
            notes = rendered.get("diptych/templates/NOTES.txt", "")
            if values["dicom"]["enabled"]:
                check("storescu" in notes, f"{profile}: NOTES.txt does not say how to send a study")
            check("SearchService/Search" in notes, f"{profile}: NOTES.txt does not say how to search")
            dest = out / profile
            dest.mkdir(parents=True, exist_ok=True)
            write_role(dest, server(docs), docs)
            (dest / "manifests.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
            if values["cluster"]["enabled"]:
                # Every role's files (routers, each shard) and the NATS configuration.
                roles = []
                for w in of_component(docs, "router") + of_component(docs, "shard") + of_component(docs, "encoder"):
                    write_role(dest / w["metadata"]["name"], w, docs)
                    roles.append({"dir": w["metadata"]["name"], "role": component(w)})
                (dest / "roles.json").write_text(json.dumps(roles))
                n = of_component(docs, "nats")[0]
                (dest / "nats.conf").write_text(config_of(docs, n, "nats.conf"))
                (dest / "nats-pod-name").write_text(f"{n['metadata']['name']}-0")
                for name, breaks in CLUSTER_BREAKAGES.items():
                    broken = copy.deepcopy(docs)
                    breaks(broken)
                    check(bool(review(broken, values, text + yaml.safe_dump_all(broken))),
                          f"the review accepts a broken cluster chart: {name}")

            if profile == "default":
                for name, breaks in BREAKAGES.items():
                    broken = copy.deepcopy(docs)
                    breaks(broken)
                    check(bool(review(broken, values, text + yaml.safe_dump_all(broken))),
                          f"the review accepts a broken chart: {name}")

        # Values the schema (or the chart) must refuse at install.
        refused = {
            "a root user": {"runAsUser": 0},
            "a privileged port": {"grpc": {"port": 80}},
            "a long AE title": {"dicom": {"aeTitle": "A-TITLE-LONGER-THAN-16"}},
            "an AE title with a backslash": {"dicom": {"aeTitle": "A\\B"}},
            "a string for a boolean": {"gpu": {"enabled": "yes"}},
            "a bad CIDR": {"networkPolicy": {"dicom": {"allowedCIDRs": ["10.0.0.0/33"]}}},
            "a host name for a CIDR": {"networkPolicy": {"dicom": {"allowedCIDRs": ["pacs.example"]}}},
            "TLS without a Secret": {"grpc": {"tls": {"enabled": True}}},
            "an inline certificate": {"grpc": {"tls": {"enabled": True, "secretName": "s",
                                                       "cert": "-----BEGIN CERTIFICATE-----"}}},
            "an inline token": {"auth": {"enabled": True, "existingSecret": "t", "token": "hunter2"}},
            "tokens without a Secret": {"auth": {"enabled": True}},
            "tokens and no authentication at once": {"auth": {"enabled": True, "existingSecret": "t",
                                                              "allowUnauthenticated": True}},
            "an unknown log format": {"logFormat": "xml"},
            "KOS of a clinical archive": {"dicom": {"kos": {"enabled": True, "destination": "W@h:1",
                                                            "archive": "clinical"}}},
            "a size that is no quantity": {"persistence": {"size": "lots"}},
            "an unknown pull policy": {"image": {"pullPolicy": "Sometimes"}},
            "an unknown key": {"replicas": 3},
            "an unknown service type": {"dicom": {"service": {"type": "Ingress"}}},
            "a deadline past the grace period": {"shutdownDeadlineSeconds": 40},
            "a queue shorter than a batch": {"encoder": {"maxBatch": 64, "queueCapacity": 32}},
            "two listeners on one port": {"http": {"port": 50051}},
            "DICOM-TLS on the plain DICOM port": {"dicom": {"tls": {"enabled": True, "secretName": "s",
                                                                   "port": 11112}}},
            "TLS-only DICOM without TLS": {"dicom": {"plain": False}},
            "a string for dicom.plain": {"dicom": {"plain": "no"}},
            "a cluster of no shards": {"cluster": {"enabled": True, "shards": 0}},
            "NATS at its 1 MiB default": {"cluster": {"enabled": True, "nats": {"maxPayload": 1048576}}},
            "more stream copies than NATS nodes": {"cluster": {"enabled": True, "nats": {"streamReplicas": 4}}},
            "a NATS URL that is no URL": {"cluster": {"enabled": True, "nats": {"url": "nats-host:4222"}}},
            "a cluster with gRPC TLS": {"cluster": {"enabled": True},
                                         "grpc": {"tls": {"enabled": True, "secretName": "s"}}},
            "a cluster sending KOS": {"cluster": {"enabled": True},
                                      "dicom": {"kos": {"enabled": True, "destination": "W@h:1",
                                                        "archive": "teaching"}}},
            "an encoder autoscaler whose minimum is above its maximum": {"cluster": {
                "enabled": True, "encoder": {"enabled": True, "autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}},
            "no queue time to scale on": {"cluster": {"enabled": True, "encoder": {
                "enabled": True, "autoscaling": {"targetQueueSeconds": 0}}}},
            "a metric name that Prometheus cannot hold": {"cluster": {"enabled": True, "encoder": {
                "enabled": True, "autoscaling": {"metricName": "queue-seconds"}}}},
            "a string for the encoder's GPU switch": {"cluster": {"enabled": True, "encoder": {
                "enabled": True, "gpu": {"enabled": "yes"}}}},
            "an unknown encoder key": {"cluster": {"enabled": True, "encoder": {"enabled": True, "image": "x"}}},
        }
        for name, bad_values in refused.items():
            try:
                render(chart, bad_values)
                check(False, f"installed with {name}: {bad_values}")
            except (helm.HelmValuesError, helm.HelmRenderError) as e:
                check(True, name)
                print(f"refused {name}: {str(e).strip().splitlines()[-1]}")
        # ... and values it must accept (so that the refusals above are not of everything).
        accepted = {
            "DICOM on port 104 of its Service": {"dicom": {"service": {"port": 104, "type": "LoadBalancer"}}},
            "an IPv6 CIDR": {"networkPolicy": {"dicom": {"allowedCIDRs": ["fd00:20::/64"]}}},
            "a spaced AE title": {"dicom": {"aeTitle": "MY ARCHIVE"}},
            "DICOM-TLS beside plain DICOM": {"dicom": {"tls": {"enabled": True, "secretName": "s"}}},
            "TLS-only DICOM": {"dicom": {"plain": False, "tls": {"enabled": True, "secretName": "s"}}},
            "a cluster on an existing NATS": {"cluster": {"enabled": True, "nats": {
                "url": "nats://nats-0.nats:4222,nats://nats-1.nats:4222"}}},
            "a CPU encoder of three fixed pods": {"cluster": {"enabled": True, "encoder": {
                "enabled": True, "replicas": 3, "gpu": {"enabled": False}, "autoscaling": {"enabled": False}}}},
            "an encoder autoscaled on its queue time alone": {"cluster": {"enabled": True, "encoder": {"enabled": True}}},
        }
        for name, good in accepted.items():
            try:
                docs = documents(render(chart, good))
                check(True, name)
            except helm.HelmError as e:
                check(False, f"refused {name}: {e}")
                continue
            if "encoder" in name:
                found = review(docs, merged(defaults, good), "\n".join(yaml.safe_dump_all(docs)))
                encoders = of_component(docs, "encoder")
                check(not found and len(encoders) == 1, f"{name}: " + "; ".join(found))
                image = encoders[0]["spec"]["template"]["spec"]["containers"][0]["image"] if encoders else ""
                check(image.endswith("-cuda") == ("CPU" not in name), f"{name}: image {image}")
            if name == "a cluster on an existing NATS":
                found = review_cluster(docs, merged(defaults, good))
                check(not found and not of_component(docs, "nats"), f"{name}: " + "; ".join(found))
            if name.startswith("DICOM on port 104"):
                svc = [s for s in of_kind(docs, "Service") if s["metadata"]["name"].endswith("-dicom")][0]
                port = svc["spec"]["ports"][0]
                check(port["port"] == 104 and port["targetPort"] == "dicom", f"DICOM Service port {port}")
                check(svc["spec"].get("externalTrafficPolicy") == "Local", "LoadBalancer keeps the caller's address")
            if name.startswith("DICOM-TLS beside") or name == "TLS-only DICOM":
                svc = [s for s in of_kind(docs, "Service") if s["metadata"]["name"].endswith("-dicom")][0]
                got = [(p["name"], p["port"]) for p in svc["spec"]["ports"]]
                want = [("dicom-tls", 2762)] if name == "TLS-only DICOM" else [("dicom", 11112), ("dicom-tls", 2762)]
                check(got == want, f"{name}: DICOM Service ports {got}, expected {want}")
                found = review_network(docs, merged(defaults, good)) + review_ports(
                    docs, merged(defaults, good), tomllib.loads(of_kind(docs, "ConfigMap")[0]["data"]["diptych.toml"])
                )
                check(not found, f"{name}: " + "; ".join(found))

    for p in problems:
        print(f"FAIL {p}")
    print(f"chart checks: {passed} passed, {len(problems)} failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
