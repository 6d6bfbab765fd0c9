"""check_deploy.py passes the real deploy/ files and catches each broken rule."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import check_deploy as cd  # noqa: E402

K8S = cd.DEPLOY / "kubernetes"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], check=True, capture_output=True, text=True).stdout
    path = tmp_path_factory.mktemp("k8s") / "rendered.yaml"
    path.write_text(out)
    return path


def k8s_inputs(rendered):
    return (
        list(yaml.safe_load_all(rendered.read_text())),
        yaml.safe_load((K8S / "backfill-job.yaml").read_text()),
        yaml.safe_load((K8S / "secret.example.yaml").read_text()),
        (K8S / "config.toml").read_text(),
    )


def test_the_real_files_pass(rendered):
    assert cd.check_all(rendered) == []


def cronjob(docs):
    return next(d for d in docs if d["kind"] == "CronJob")


def test_cronjob_rules_are_enforced(rendered):
    docs, job, secret, config = k8s_inputs(rendered)
    bad = copy.deepcopy(docs)
    spec = cronjob(bad)["spec"]
    spec["concurrencyPolicy"] = "Allow"
    container = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFilesystem"] = False
    container["env"].append({"name": "AWS_SECRET_ACCESS_KEY2", "value": "literal"})
    problems = cd.check_kubernetes(bad, job, secret, config)
    assert any("concurrencyPolicy" in p for p in problems)
    assert any("readOnlyRootFilesystem" in p for p in problems)
    assert any("literal value" in p for p in problems)
    assert cd.check_kubernetes(docs, job, secret, config + "\n# edited\n") != []


def test_shard_count_must_match_completions(rendered):
    docs, job, secret, config = k8s_inputs(rendered)
    job["spec"]["completions"] = 3
    assert any("--shard" in p for p in cd.check_kubernetes(docs, job, secret, config))


def test_unit_rules_are_enforced():
    service = (cd.DEPLOY / "systemd/syncvet-etl.service").read_text()
    daemon = (cd.DEPLOY / "systemd/syncvet-etl-daemon.service").read_text()
    timer = (cd.DEPLOY / "systemd/syncvet-etl.timer").read_text()
    assert cd.check_units(service, daemon, timer) == []
    weak = service.replace("ProtectSystem=strict", "ProtectSystem=full").replace("LoadCredential=", "#LoadCredential=")
    problems = cd.check_units(weak, daemon, timer.replace("Persistent=true", ""))
    assert len(problems) == 3, problems


def test_config_and_dockerfile_rules_are_enforced():
    config = (K8S / "config.toml").read_text()
    assert cd.check_config("k", config, "s3://") == []
    assert len(cd.check_config("k", config.replace('[api]\n', '[api]\nclient_secret = "x"\n'), "s3://")) == 1
    assert cd.check_config("k", "[api", None)[0].startswith("k: not TOML")
    docker = (cd.DEPLOY / "docker/Dockerfile").read_text()
    assert cd.check_dockerfile(docker) == []
    assert any("USER" in p for p in cd.check_dockerfile(docker.replace("USER 65532:65532", "USER root")))
    assert any("COPY source" in p for p in cd.check_dockerfile(docker.replace("COPY config", "COPY nothere")))
