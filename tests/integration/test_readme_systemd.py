"""README's "Run it as a service (systemd)" steps work as written, up to what needs PID 1.

The steps are read from README.md itself, so the README cannot drift from what is tested: every
line of the code block runs (``sudo`` dropped, ``/etc/`` moved into a temporary root) except
the ones that need the package index, PID 1 or the journal, which are checked for agreement with
the unit instead. Then the unit's own ``LoadCredential=`` lines are played the way systemd
plays them (each file copied into a credentials directory under its id) and ``printfleet check``
runs against the installed config with ``$CREDENTIALS_DIRECTORY`` set, as under the service.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from printfleet.simulator import Simulator, SimulatorConfig

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
UNIT = ROOT / "deploy" / "systemd" / "printfleet.service"
EXAMPLE = ROOT / "config.example.toml"
#: Steps of the block that need the network, PID 1 or the journal: not run, checked otherwise.
NOT_RUN = ("PIPX_HOME=", "systemctl ", "journalctl ")


def section(title: str) -> str:
    """The README text under ``## title`` up to the next ``## `` heading."""
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def sh_blocks(text: str) -> list[list[str]]:
    """The lines of every ```sh block in ``text``."""
    return [m.group(1).strip().splitlines() for m in re.finditer(r"```sh\n(.*?)```", text, re.S)]


def command(line: str) -> str:
    """A README line as a command: ``sudo`` dropped, a trailing ``# comment`` dropped."""
    line = re.sub(r"\s+#\s.*$", "", line).strip()
    return re.sub(r"(^|&&\s*)sudo\s+", r"\1", line)


def unit_values(key: str, *, commented: bool = False) -> list[str]:
    prefix = r"#\s*" if commented else ""
    return re.findall(rf"^{prefix}{key}=(.*)$", UNIT.read_text(), re.M)


def credentials() -> dict[str, str]:
    """The unit's ``LoadCredential=`` lines: credential id → source path."""
    return dict(value.split(":", 1) for value in unit_values("LoadCredential"))


def file_values(node: object) -> Iterator[str]:
    """Every ``*_file`` value of a parsed config (``ca_file`` is not a secret)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith("_file") and key != "ca_file" and isinstance(value, str):
                yield value
            else:
                yield from file_values(value)
    elif isinstance(node, list):
        for item in node:
            yield from file_values(item)


def systemd_steps() -> list[str]:
    (steps, *_) = sh_blocks(section("Run it as a service (systemd)"))
    return [command(line) for line in steps]


def test_readme_steps_pass_check_in_a_temporary_root(tmp_path: Path) -> None:
    """Running the README's systemd steps leaves a config that `printfleet check` accepts, both
    with the README's own check line and with the credentials the unit's lines would load."""
    root = tmp_path / "root"
    (root / "etc" / "systemd" / "system").mkdir(parents=True)  # what every systemd host has
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(EXAMPLE, checkout)
    shutil.copytree(ROOT / "rules", checkout / "rules")
    shutil.copytree(ROOT / "deploy", checkout / "deploy")
    with Simulator(SimulatorConfig(formlabs_printers=1, carbon_printers=1)) as sim:
        (checkout / "formlabs.secret").write_text(sim.formlabs_client_secret + "\n")
        sim.write_carbon_secrets(checkout / "carbon-secrets.json")
    (checkout / "slack.url").write_text("https://hooks.slack.com/services/T0/B0/readme\n")
    (checkout / "mes-webhook.secret").write_text("mes-signing-key\n")

    env = {k: v for k, v in os.environ.items() if k not in ("PRINTFLEET_CONFIG",)}
    env.pop("CREDENTIALS_DIRECTORY", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # this checkout's package

    def reroot(text: str) -> str:
        text = re.sub(r"(?<![\w.])/etc/", f"{root}/etc/", text)
        return re.sub(r"(?<![\w.])/var/lib/", f"{root}/var/lib/", text)

    ran = []
    for step in systemd_steps():
        if step.startswith(NOT_RUN):
            continue
        done = subprocess.run(
            ["bash", "-euc", reroot(step)],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"README step failed: {step}\n{done.stdout}{done.stderr}"
        ran.append((step, done.stdout))
        if step.startswith("cp config.example.toml"):
            # "then edit it": the only edit a temporary root needs is the root itself.
            config = root / "etc" / "printfleet" / "config.toml"
            config.write_text(reroot(config.read_text()))
            (root / "var" / "lib").mkdir(parents=True, exist_ok=True)

    checks = [out for step, out in ran if " check " in f" {step} "]
    assert checks, "the README's steps run `printfleet check`"
    assert all(": OK" in out for out in checks), checks
    assert (root / "etc" / "systemd" / "system" / "printfleet.service").exists()
    assert oct((root / "etc" / "printfleet" / "credentials").stat().st_mode & 0o777) == "0o700"

    # What systemd does with the unit's LoadCredential= lines, then the service's view.
    loaded = tmp_path / "run" / "credentials" / "printfleet.service"
    loaded.mkdir(parents=True)
    for name, source in credentials().items():
        path = Path(reroot(source))
        assert path.is_file(), f"LoadCredential={name}:{source}: the README's steps put no file"
        shutil.copy(path, loaded / name)
    (exec_start,) = unit_values("ExecStart")
    argv = shlex.split(reroot(exec_start))
    assert argv[1] == "run"
    service = subprocess.run(
        ["printfleet", "check", *argv[2:]],
        env={**env, "CREDENTIALS_DIRECTORY": str(loaded)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert service.returncode == 0, service.stdout + service.stderr
    assert ": OK" in service.stdout


def test_one_secret_scheme_in_unit_example_and_readme() -> None:
    """The unit's credential ids, the example config's bare `*_file` names and the files the
    README installs are the same set, each id loaded from /etc/printfleet/credentials/."""
    loaded = credentials()
    assert all(source == f"/etc/printfleet/credentials/{n}" for n, source in loaded.items())
    example = tomllib.loads(EXAMPLE.read_text())
    names = list(file_values(example))
    assert all("/" not in name for name in names), f"bare names only: {names}"
    assert set(names) == set(loaded)
    (install,) = [s for s in systemd_steps() if s.startswith("install -m 0600")]
    assert set(shlex.split(install)[3:-1]) == set(loaded)
    # The commented-out MQTT password has its commented-out credential line.
    commented = dict(v.split(":", 1) for v in unit_values("LoadCredential", commented=True))
    assert re.search(r'^# password_file = "mqtt.password"$', EXAMPLE.read_text(), re.M)
    assert "mqtt.password" in commented
    # The receivers of the README's Webhooks section use bare names too.
    webhooks = section("Webhooks")
    for value in re.findall(r'^(?:url|secret)_file = "([^"]+)"', webhooks, re.M):
        assert "/" not in value, value


def test_install_sections_agree_with_the_unit() -> None:
    """Both install forms the README offers put `printfleet` where the unit's ExecStart runs it,
    and the systemd section uses the Install section's pipx form (not plain `sudo pipx`)."""
    (exec_start,) = unit_values("ExecStart")
    binary = Path(shlex.split(exec_start)[0])
    install = [command(line) for block in sh_blocks(section("Install")) for line in block]
    pipx = [line for line in install if "pipx install" in line and "PIPX_HOME" in line]
    assert pipx, install
    (systemd_pipx,) = [s for s in systemd_steps() if "pipx install" in s]
    assert shlex.split(systemd_pipx)[:2] == shlex.split(pipx[0])[:2]
    bin_dir = dict(word.split("=", 1) for word in shlex.split(pipx[0])[:2])["PIPX_BIN_DIR"]
    assert Path(bin_dir) / "printfleet" == binary
    assert not any(re.match(r"^pipx install", line) for line in systemd_steps())
    venv = [line for line in install if "/opt/printfleet" in line]
    assert "python3 -m venv /opt/printfleet" in venv
    (link,) = [line for line in venv if line.startswith("ln ")]
    assert shlex.split(link)[-2:] == ["/opt/printfleet/bin/printfleet", str(binary)]
    documentation = " ".join(unit_values("Documentation"))
    assert "man:" not in documentation
    assert "share/printfleet/README.md" in documentation


@pytest.mark.parametrize("name", ["formlabs.secret"])
def test_missing_bare_secret_hint_names_credentials_directory(tmp_path: Path, name: str) -> None:
    """A bare secret name missing next to the config (no $CREDENTIALS_DIRECTORY) exits 2 with a
    fix that says how to point printfleet at the credentials directory."""
    config = tmp_path / "config.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{tmp_path}/state"\n'
        '[[source]]\nname = "lab"\nvendor = "formlabs"\nclient_id = "x"\n'
        f'client_secret_file = "{name}"\n[mqtt]\nenabled = false\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    done = subprocess.run(
        [sys.executable, "-m", "printfleet", "check", "-c", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "CREDENTIALS_DIRECTORY=/etc/printfleet/credentials printfleet check" in done.stderr
