"""Checks of the diptych Helm chart, with Helm's own library (helm-python-sdk: Helm 4 as a shared
library, no helm binary) and the Kubernetes schemas of kubernetes-validate, offline.

For every profile in ci/*-values.yaml (default, gpu, tls, minimal): `helm lint --strict`, render
as `helm install` would (values checked against values.schema.json), every manifest validated
against the Kubernetes schemas of the oldest and newest versions the chart supports, then what a
reviewer checks: non-root, read-only root, no privilege escalation, capabilities dropped, seccomp;
the three probes from gRPC health; GPU limits, the CUDA image and the CUDA execution provider only
with gpu.enabled; no Secret and no secret material anywhere in the output; DICOM admitted only
from the configured CIDRs; ports that agree between the configuration, the container and the
Services. The reviewer's checks are then run on broken copies of the manifests, each of which
they must reject, and the schema must refuse a list of bad values.

Usage: python check_chart.py CHART_DIR OUT_DIR
Writes OUT_DIR/<profile>/diptych.toml (the ConfigMap's configuration), args.json and env.json
(the server's command-line arguments and environment) and manifests.yaml, for
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
PROFILES = ["default", "gpu", "tls", "minimal"]
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
    for sts in of_kind(docs, "StatefulSet"):
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
            if "/data" not in mounts:
                found.append(f"container {name}: the data folder /data is not mounted")
    return found


def review_probes(docs: list[dict], values: dict) -> list[str]:
    found = []
    tls = values["grpc"]["tls"]["enabled"]
    for sts in of_kind(docs, "StatefulSet"):
        c = sts["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = c.get(kind)
            if not probe:
                found.append(f"{kind} missing")
                continue
            if tls:
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
    gpu = values["gpu"]["enabled"]
    for sts in of_kind(docs, "StatefulSet"):
        pod = sts["spec"]["template"]["spec"]
        for c in pod["containers"]:
            res = c.get("resources", {})
            gpu_keys = [k for part in ("limits", "requests") for k in res.get(part, {}) if k.endswith("/gpu")]
            provider = {e["name"]: e.get("value") for e in c.get("env", [])}.get("DIPTYCH_EXECUTION_PROVIDER")
            cuda_image = c["image"].rsplit(":", 1)[-1].endswith("-cuda")
            if gpu:
                if res.get("limits", {}).get("nvidia.com/gpu") != values["gpu"]["count"]:
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
            if (values.get(key) or None) != (given or None):
                found.append(f"{key} is {given!r}, the values say {values.get(key)!r}")
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
    for sts in of_kind(docs, "StatefulSet"):
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
        if values["grpc"]["tls"]["enabled"]:
            expected |= {values["grpc"]["tls"]["secretName"], values["grpc"]["tls"]["clientCASecretName"]}
        if values["dicom"]["tls"]["enabled"]:
            expected |= {values["dicom"]["tls"]["secretName"], values["dicom"]["tls"]["clientCASecretName"]}
        if values["auth"]["enabled"]:
            expected.add(values["auth"]["existingSecret"])
        expected.discard("")
        if named != expected:
            found.append(f"Secrets mounted {sorted(named)}, the values name {sorted(expected)}")
    for cm in of_kind(docs, "ConfigMap"):
        for key, body in cm.get("data", {}).items():
            if PEM.search(body):
                found.append(f"ConfigMap {key} holds key material")
    return found


def review_network(docs: list[dict], values: dict) -> list[str]:
    found = []
    policies = of_kind(docs, "NetworkPolicy")
    if not values["networkPolicy"]["enabled"]:
        return ["a NetworkPolicy rendered while networkPolicy.enabled is false"] if policies else []
    if len(policies) != 1:
        return [f"{len(policies)} NetworkPolicies rendered, expected 1"]
    spec = policies[0]["spec"]
    if "Ingress" not in spec.get("policyTypes", []):
        found.append("the NetworkPolicy does not govern ingress")
    dicom_names = {"dicom", "dicom-tls"}
    sts = of_kind(docs, "StatefulSet")[0]
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
    sts = of_kind(docs, "StatefulSet")[0]
    c = sts["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    dicom_tls = values["dicom"]["tls"]["enabled"]

    def port_of(addr: str) -> int:
        return int(addr.rsplit(":", 1)[1])

    if port_of(config["grpc"]["addr"]) != ports.get("grpc") or ports.get("grpc") != values["grpc"]["port"]:
        found.append(f"gRPC: config {config['grpc']['addr']}, container {ports.get('grpc')}")
    http_addr = config.get("http", {}).get("addr", "")
    if not http_addr or port_of(http_addr) != ports.get("http") or ports.get("http") != values["http"]["port"]:
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
    base = sts["metadata"]["name"]
    expected = {base, f"{base}-http", f"{base}-headless"} | ({f"{base}-dicom"} if values["dicom"]["enabled"] else set())
    if set(services) != expected:
        found.append(f"Services {sorted(services)}, expected {sorted(expected)}")
    for name, svc in services.items():
        for p in svc["spec"]["ports"]:
            if p["targetPort"] not in ports:
                found.append(f"Service {name} targets {p['targetPort']}, which the container does not open")
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
    monitors = of_kind(docs, "ServiceMonitor")
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


def review(docs: list[dict], values: dict, text: str) -> list[str]:
    config = tomllib.loads(of_kind(docs, "ConfigMap")[0]["data"]["diptych.toml"])
    return (
        review_security(docs, values)
        + review_probes(docs, values)
        + review_gpu(docs, values)
        + review_secrets(docs, values, text)
        + review_network(docs, values)
        + review_ports(docs, values, config)
        + review_storage(docs, values)
        + review_monitoring(docs, values)
    )


# --- broken copies that the review must reject: proves each check can fail ---


def container(docs):
    return of_kind(docs, "StatefulSet")[0]["spec"]["template"]["spec"]["containers"][0]


def pod(docs):
    return of_kind(docs, "StatefulSet")[0]["spec"]["template"]["spec"]


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
            (dest / "diptych.toml").write_text(of_kind(docs, "ConfigMap")[0]["data"]["diptych.toml"])
            (dest / "args.json").write_text(json.dumps(container(docs)["args"]))
            (dest / "env.json").write_text(json.dumps(
                {e["name"]: e["value"] for e in container(docs)["env"] if "value" in e}
            ))
            (dest / "manifests.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))

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
        }
        for name, good in accepted.items():
            try:
                docs = documents(render(chart, good))
                check(True, name)
            except helm.HelmError as e:
                check(False, f"refused {name}: {e}")
                continue
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
