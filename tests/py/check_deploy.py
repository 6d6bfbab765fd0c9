#!/usr/bin/env python3
"""Rules for deploy/ that schema validators cannot express.

systemd-analyze and kubernetes-validate say a file is well-formed; this says
it does what the project promises: hardened units that read the secret as a
credential, a CronJob that never runs twice at once and runs non-root on a
read-only root, an Indexed Job whose shard count matches its completions, a
distroless non-root image. Prints each problem and exits 1 if there is any.

Usage: check_deploy.py --rendered RENDERED.yaml   (output of kubectl kustomize deploy/kubernetes)
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CONFIG_PATH = "/etc/syncvet-etl/config.toml"
METRICS_LISTEN = "0.0.0.0:9184"

UNIT_HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "CapabilityBoundingSet": "",
    "SystemCallFilter": "@system-service",
    "LoadCredential": "client-secret:/etc/syncvet-etl/client-secret",
    "Environment": "SYNCVET_ETL__API__CLIENT_SECRET_FILE=%d/client-secret",
}


def parse_unit(text: str) -> dict[str, list[str]]:
    """Key -> every value it is given (systemd allows repeats), sections merged."""
    keys: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;[" or "=" not in line:
            continue
        key, value = line.split("=", 1)
        keys.setdefault(key.strip(), []).append(value.strip())
    return keys


def check_units(service: str, daemon: str, timer: str) -> list[str]:
    problems = []
    for name, text, command in (("syncvet-etl.service", service, "run"), ("syncvet-etl-daemon.service", daemon, "daemon")):
        unit = parse_unit(text)
        for key, value in UNIT_HARDENING.items():
            if value not in unit.get(key, []):
                problems.append(f"{name}: needs {key}={value}")
        if "yes" not in unit.get("DynamicUser", []) and not unit.get("User"):
            problems.append(f"{name}: needs DynamicUser=yes or a dedicated User=")
        exec_start = " ".join(unit.get("ExecStart", []))
        if not re.search(rf"syncvet-etl {command}\b.*--config {re.escape(CONFIG_PATH)}", exec_start):
            problems.append(f"{name}: ExecStart must be `syncvet-etl {command} --config {CONFIG_PATH}`, is {exec_start!r}")
        if "130" not in " ".join(unit.get("SuccessExitStatus", [])):
            problems.append(f"{name}: exit 130 (clean stop on SIGTERM) must count as success")
    if "oneshot" not in parse_unit(service).get("Type", []):
        problems.append("syncvet-etl.service: must be Type=oneshot")
    timer_keys = parse_unit(timer)
    for key, value in (("Unit", "syncvet-etl.service"), ("Persistent", "true")):
        if value not in timer_keys.get(key, []):
            problems.append(f"syncvet-etl.timer: needs {key}={value}")
    if not timer_keys.get("OnCalendar"):
        problems.append("syncvet-etl.timer: needs OnCalendar=")
    return problems


def check_config(name: str, text: str, lake_scheme: str | None) -> list[str]:
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        return [f"{name}: not TOML: {err}"]
    problems = []
    api = config.get("api", {})
    if "client_secret" in api:
        problems.append(f"{name}: the client secret itself must not be in the config file")
    if config.get("daemon", {}).get("listen") != METRICS_LISTEN:
        problems.append(f"{name}: [daemon] listen must be {METRICS_LISTEN!r}")
    if config.get("emulator", {}).get("enabled") is not False:
        problems.append(f"{name}: a production config must set [emulator] enabled = false")
    url = config.get("lake", {}).get("url", "")
    if lake_scheme and not url.startswith(lake_scheme):
        problems.append(f"{name}: [lake] url must be an {lake_scheme} URL, is {url!r}")
    return problems


def pod_problems(name: str, pod: dict, secret_keys: set[str]) -> list[str]:
    problems = []
    sc = pod.get("securityContext", {})
    if sc.get("runAsNonRoot") is not True:
        problems.append(f"{name}: pod securityContext.runAsNonRoot must be true")
    if pod.get("restartPolicy") != "Never":
        problems.append(f"{name}: restartPolicy must be Never (the Job retries, with backoff)")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for c in pod.get("containers", []):
        csc = c.get("securityContext", {})
        if csc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: container {c['name']}: readOnlyRootFilesystem must be true")
        if csc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: container {c['name']}: allowPrivilegeEscalation must be false")
        if "ALL" not in csc.get("capabilities", {}).get("drop", []):
            problems.append(f"{name}: container {c['name']}: must drop ALL capabilities")
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            if "memory" not in res.get(kind, {}):
                problems.append(f"{name}: container {c['name']}: resources.{kind}.memory missing")
        args = " ".join(map(str, c.get("args", [])))
        if f"--config {CONFIG_PATH}" not in args:
            problems.append(f"{name}: container {c['name']}: args must pass --config {CONFIG_PATH}")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        config_volume = volumes.get(mounts.get(str(Path(CONFIG_PATH).parent), ""), {})
        if config_volume.get("configMap", {}).get("name") != "syncvet-etl-config":
            problems.append(f"{name}: {Path(CONFIG_PATH).parent} must be the ConfigMap syncvet-etl-config")
        env = {e["name"]: e for e in c.get("env", [])}
        ref = env.get("SYNCVET_CLIENT_SECRET", {}).get("valueFrom", {}).get("secretKeyRef")
        if not ref:
            problems.append(f"{name}: SYNCVET_CLIENT_SECRET must come from a Secret (secretKeyRef)")
        for e in env.values():
            key_ref = e.get("valueFrom", {}).get("secretKeyRef")
            if key_ref and key_ref.get("key") not in secret_keys:
                problems.append(f"{name}: secret key {key_ref.get('key')!r} is not in secret.example.yaml")
            if "value" in e and re.search(r"SECRET|PASSWORD|KEY", e["name"]):
                problems.append(f"{name}: {e['name']} is a secret given as a literal value")
    return problems


def check_kubernetes(rendered: list[dict], job: dict, secret: dict, config_text: str) -> list[str]:
    problems = []
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in rendered if d}
    secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    cm = by_kind.get(("ConfigMap", "syncvet-etl-config"))
    if not cm or cm.get("data", {}).get("config.toml") != config_text:
        problems.append("kustomization: ConfigMap syncvet-etl-config must carry deploy/kubernetes/config.toml")
    cron = by_kind.get(("CronJob", "syncvet-etl"))
    if not cron:
        return problems + ["kustomization: no CronJob syncvet-etl"]
    spec = cron["spec"]
    if spec.get("concurrencyPolicy") != "Forbid":
        problems.append("CronJob: concurrencyPolicy must be Forbid")
    job_spec = spec["jobTemplate"]["spec"]
    for key in ("backoffLimit", "activeDeadlineSeconds"):
        if key not in job_spec:
            problems.append(f"CronJob: jobTemplate.spec.{key} missing")
    problems += pod_problems("CronJob", job_spec["template"]["spec"], secret_keys)

    jspec = job.get("spec", {})
    if jspec.get("completionMode") != "Indexed":
        problems.append("backfill Job: completionMode must be Indexed")
    args = " ".join(map(str, jspec["template"]["spec"]["containers"][0].get("args", [])))
    shard = re.search(r"--shard \$\(JOB_COMPLETION_INDEX\)/(\d+)", args)
    if not shard:
        problems.append("backfill Job: args must pass --shard $(JOB_COMPLETION_INDEX)/N")
    elif not int(shard.group(1)) == jspec.get("completions") == jspec.get("parallelism"):
        problems.append(
            f"backfill Job: --shard .../{shard.group(1)} must equal completions ({jspec.get('completions')})"
            f" and parallelism ({jspec.get('parallelism')})"
        )
    if not re.search(r"^backfill --from \S+ --to \S+", args):
        problems.append("backfill Job: must run `backfill --from D --to D`")
    problems += pod_problems("backfill Job", jspec["template"]["spec"], secret_keys)
    return problems


def check_dockerfile(text: str) -> list[str]:
    problems = []
    lines = [l.strip() for l in re.sub(r"\\\n", " ", text).splitlines() if l.strip() and not l.lstrip().startswith("#")]
    froms = [l for l in lines if l.upper().startswith("FROM ")]
    if len(froms) < 2:
        problems.append("Dockerfile: must be multi-stage (a builder and a runtime stage)")
    final = lines[lines.index(froms[-1]):] if froms else lines
    users = [l.split()[1] for l in final if l.upper().startswith("USER ")]
    if not users or users[-1].split(":")[0] in ("root", "0") or not users[-1].split(":")[0].isdigit():
        problems.append("Dockerfile: the runtime stage must end with a numeric non-root USER")
    if not any(l.upper().startswith("ENTRYPOINT") and "syncvet-etl" in l for l in final):
        problems.append("Dockerfile: ENTRYPOINT must be the syncvet-etl binary")
    if not any(l.upper().startswith("EXPOSE") and "9184" in l for l in final):
        problems.append("Dockerfile: must EXPOSE 9184 (daemon /healthz, /metrics)")
    for line in lines:
        parts = line.split()
        if parts[0].upper() == "COPY" and not any(p.startswith("--from") for p in parts):
            for src in parts[1:-1]:
                if not (REPO / src).exists():
                    problems.append(f"Dockerfile: COPY source {src} does not exist in the repository")
    if "-p syncvet-etl" in text and not (REPO / "crates/syncvet-etl/Cargo.toml").exists():
        problems.append("Dockerfile: builds -p syncvet-etl but crates/syncvet-etl is missing")
    return problems


def check_all(rendered_path: Path) -> list[str]:
    k8s = DEPLOY / "kubernetes"
    problems = check_units(
        (DEPLOY / "systemd/syncvet-etl.service").read_text(),
        (DEPLOY / "systemd/syncvet-etl-daemon.service").read_text(),
        (DEPLOY / "systemd/syncvet-etl.timer").read_text(),
    )
    problems += check_config("deploy/systemd/config.toml", (DEPLOY / "systemd/config.toml").read_text(), None)
    config_text = (k8s / "config.toml").read_text()
    problems += check_config("deploy/kubernetes/config.toml", config_text, "s3://")
    problems += check_kubernetes(
        list(yaml.safe_load_all(rendered_path.read_text())),
        yaml.safe_load((k8s / "backfill-job.yaml").read_text()),
        yaml.safe_load((k8s / "secret.example.yaml").read_text()),
        config_text,
    )
    problems += check_dockerfile((DEPLOY / "docker/Dockerfile").read_text())
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rendered", type=Path, required=True, help="output of kubectl kustomize deploy/kubernetes")
    problems = check_all(ap.parse_args().rendered)
    for p in problems:
        print(f"check_deploy: {p}", file=sys.stderr)
    print(f"check_deploy: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
