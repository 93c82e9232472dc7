"""The pipeline image without Docker: the Dockerfile read, its build context, the wheel
it builds, and the Python environment it installs.

No Docker engine runs here, so the tests rebuild what the image holds the way the
Dockerfile does: the build context (the files `.dockerignore` lets through), the wheel
stage's COPYs, `pip wheel --no-deps`, then a virtual environment with that wheel and the
pinned set and nothing else (`image_venv`). Installing the pinned set again from the index
would take minutes and about 3 GB; the test run's own environment was installed from the
same lock, so `base_site` links the files of the distributions the wheel's requirements
resolve to (their closure, extras and markers as pip reads them) from there into a cached
site directory *without* this project or the test tools (under ~/.cache/daian-tf/, like
scripts/env.sh's venv). Each test run makes a small fresh venv that sees that directory
(`site.addsitedir` in a .pth file) and installs the freshly built wheel into itself with
`--no-deps`; `pip check` there says whether the closure is complete. The cached directory
is never modified.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from email.parser import Parser
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
LOCK = REPO / "requirements" / "constraints-py310.txt"
WHEEL_STAGE = "wheel"  # the Dockerfile's stage that builds the wheel
# what `python -m venv` puts into every environment: not part of the pinned set
VENV_SEEDS = {"pip", "setuptools", "wheel"}


# --- the Dockerfile ---------------------------------------------------------------------

@dataclasses.dataclass
class Instruction:
    keyword: str  # upper case: FROM, COPY, RUN, ...
    args: str  # the rest of the instruction, continuation lines joined
    line: int  # where it starts (1-based)
    stage: Optional[str]  # the stage's name (FROM ... AS name), None before any FROM


def dockerfile(path: Path = DOCKERFILE) -> List[Instruction]:
    """The instructions of a Dockerfile (comments dropped, `\\` continuations joined)."""
    out: List[Instruction] = []
    stage, pending, start = None, "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):  # a comment inside a continued instruction
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = pending + line
        pending = ""
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            stage = words[2] if len(words) >= 3 and words[1].upper() == "AS" else \
                f"stage{sum(i.keyword == 'FROM' for i in out)}"
        out.append(Instruction(keyword, args.strip(), start, stage))
    if pending:
        raise ValueError(f"{path}: the last instruction ends with a continuation")
    return out


def build_args(instructions: List[Instruction]) -> Dict[str, str]:
    """{name: default} of the ARGs before the first FROM (the ones FROM lines use)."""
    out = {}
    for ins in instructions:
        if ins.keyword == "FROM":
            break
        if ins.keyword == "ARG":
            name, _, default = ins.args.partition("=")
            out[name.strip()] = default.strip()
    return out


def expand(text: str, args: Dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), text)


@dataclasses.dataclass
class Copy:
    sources: List[str]
    dest: str
    from_stage: Optional[str]
    stage: str
    line: int


def copies(instructions: List[Instruction]) -> List[Copy]:
    """The COPY instructions, their flags read (`--from`), in order."""
    out = []
    for ins in instructions:
        if ins.keyword != "COPY":
            continue
        words = shlex.split(ins.args)
        flags = [w for w in words if w.startswith("--")]
        paths = [w for w in words if not w.startswith("--")]
        from_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")),
                          None)
        out.append(Copy(paths[:-1], paths[-1], from_stage, ins.stage, ins.line))
    return out


def requirement_pins(lock: Path = LOCK) -> Dict[str, str]:
    """{canonical name: version} of the lock's `name==version` lines."""
    pins = {}
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonical(name.split("[")[0])] = version.strip()
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --- .dockerignore and the build context ------------------------------------------------

def _pattern_regex(pattern: str) -> re.Pattern:
    """Docker's .dockerignore pattern (Go's filepath.Match, plus `**` for any number of
    directories) as a regular expression over a /-separated relative path."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                out, i = out + "(?:.*/)?", i + 1
            else:
                out += ".*"
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.index("]", i)
            cls = pattern[i + 1:end]
            out += "[" + ("^" + cls[1:] if cls.startswith("^") else cls) + "]"
            i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + r"\Z")


def dockerignore(path: Path = DOCKERIGNORE) -> List[Tuple[re.Pattern, bool, str]]:
    """(regex, is an exception `!`, the pattern) for each line of a .dockerignore."""
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line[1:] if negated else line).lstrip("/")
        out.append((_pattern_regex(pattern), negated, line))
    return out


def ignored(relpath: str, patterns) -> bool:
    """Whether Docker leaves `relpath` out of the build context: the last pattern that
    matches it or one of its parent directories decides."""
    parts = relpath.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for regex, negated, _ in patterns:
        if any(regex.match(p) for p in prefixes):
            excluded = not negated
    return excluded


def context_files(root: Path = REPO, patterns=None) -> List[str]:
    """The files (relative, /-separated) that `docker build` sends from `root`."""
    patterns = dockerignore() if patterns is None else patterns
    exceptions = [text[1:].lstrip("/") for _, negated, text in patterns if negated]

    def walk_into(d: str) -> bool:  # an ignored directory only if `!` may reach inside
        return not ignored(d, patterns) or any(
            e.startswith(d + "/") or "*" in e for e in exceptions)

    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root).as_posix()
        rel = "" if rel == "." else rel + "/"
        dirnames[:] = [d for d in dirnames if walk_into(rel + d)]
        out += [rel + f for f in filenames if not ignored(rel + f, patterns)]
    return sorted(out)


def stage_sources(dest: Path, stage: str = WHEEL_STAGE, root: Path = REPO) -> Path:
    """Lays out in `dest` what the Dockerfile's `stage` COPYs from the build context
    (files into a directory destination, a directory's contents into its destination),
    relative to the stage's WORKDIR; returns `dest`."""
    instructions = dockerfile()
    context = set(context_files(root))
    for copy in copies(instructions):
        if copy.stage != stage or copy.from_stage:
            continue
        for source in copy.sources:
            source = source.rstrip("/") or "."
            files = [f for f in context if f == source or f.startswith(source + "/")]
            if not files:
                raise FileNotFoundError(
                    f"Dockerfile line {copy.line}: COPY {source}: nothing in the build "
                    f"context (missing, or left out by .dockerignore)")
            for f in files:
                if f == source:  # a file
                    target = dest / copy.dest / Path(f).name if copy.dest.endswith("/") \
                        or copy.dest in (".", "./") else dest / copy.dest
                else:  # a directory: its contents
                    target = dest / copy.dest / Path(f).relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / f, target)
    return dest


# --- the wheel and the environment ------------------------------------------------------

def build_wheel(sources: Path, out: Path) -> Path:
    """`pip wheel --no-deps` of `sources` (offline: this environment's setuptools)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "--wheel-dir", str(out),
                    str(sources)], check=True, timeout=600)
    wheels = sorted(out.glob("daian_tf-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one daian_tf wheel in {out}, found {wheels}")
    return wheels[0]


def wheel_metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(z.read(name).decode())


def wheel_requirements(wheel: Path) -> List[str]:
    """The wheel's install requirements (no extras' ones), sorted."""
    out = []
    for line in wheel_metadata(wheel).get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.append(str(req))
    return sorted(out)


def _python310() -> str:
    """The interpreter that makes the environments (3.10, as the lock and the image)."""
    base = getattr(sys, "_base_executable", sys.executable)
    if sys.version_info[:2] != (3, 10):
        raise RuntimeError(f"the image's environment is Python 3.10; this is {sys.version}")
    return base


def _site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / \
        "site-packages"


def pinned_closure(requirements: List[str], site: Path) -> Dict[str, object]:
    """{canonical name: importlib.metadata.Distribution} of what `pip install -c LOCK
    *requirements` installs, found among the distributions of `site`: the requirements,
    the extras they name and their dependencies, markers evaluated as pip evaluates them
    (this interpreter, and `extra` for each extra asked for). `site` is an environment
    installed from the same lock (the test run's), so each is the lock's version; one
    that is missing or off its requirement's range is an error naming it."""
    import importlib_metadata as metadata  # reads legacy installs' installed-files.txt

    found = {canonical(d.metadata["Name"]): d
             for d in metadata.distributions(path=[str(site)])}
    out: Dict[str, object] = {}
    todo = [Requirement(r) for r in requirements]
    seen = set()
    while todo:
        req = todo.pop()
        name = canonical(req.name)
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        dist = found.get(name)
        if dist is None:
            raise RuntimeError(f"{req} (a requirement of the wheel's) is not installed in "
                               f"{site}: install the project there with the lock first")
        if not req.specifier.contains(dist.version, prereleases=True):
            raise RuntimeError(f"{site} holds {name} {dist.version}, outside {req}")
        out[name] = dist
        extras = {""} | set(req.extras)
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e})
                                         for e in extras):
                todo.append(sub)
    return out


def base_site(requirements: List[str], source: Optional[Path] = None,
              log=print) -> Tuple[Path, float]:
    """A cached site-packages directory that holds the pinned set the wheel needs and
    nothing else (not the wheel), as `pip install -c LOCK *requirements` would make it,
    plus pip and setuptools (what `python -m venv` seeds).

    It is not installed again from the index: the files of those distributions (their
    RECORDs) are hard-linked (copied across file systems) from `source`, the test run's
    site-packages, which the same lock installed. Keyed by the distributions and their
    versions; made once (seconds to a minute), then reused. Returns (path, seconds spent
    making it: 0 when reused)."""
    import sysconfig

    source = Path(source or sysconfig.get_paths()["purelib"]).resolve()
    seeds = [s for s in sorted(VENV_SEEDS) if _installed_in(s, source)]  # pip: `pip check`
    closure = pinned_closure([*requirements, *seeds], source)
    pins = sorted(f"{name}=={d.version}" for name, d in closure.items())
    key = hashlib.sha256("\n".join([*pins, sys.version.split()[0]]).encode()
                         ).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "daian-tf"
    site = cache / f"image-site-{key}"
    marker = site / ".daian-image-site"
    cache.mkdir(parents=True, exist_ok=True)
    with open(f"{site}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # one maker at a time
        if marker.exists():
            return site, 0.0
        log(f"[image] linking {len(closure)} distributions of the pinned set into {site}")
        t0 = time.monotonic()
        shutil.rmtree(site, ignore_errors=True)
        for name, dist in closure.items():
            if dist.files is None:
                raise RuntimeError(f"{name} {dist.version} in {source} has no RECORD")
            for file in dist.files:
                path = Path(dist.locate_file(file)).resolve()
                if not path.is_relative_to(source) or not path.is_file():
                    continue  # scripts in bin/, files a RECORD lists but pip did not keep
                target = site / path.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(path, target)
                except FileExistsError:
                    pass  # a file two distributions list (namespace __init__ files)
                except OSError:
                    shutil.copy2(path, target)
        marker.write_text("\n".join(pins) + "\n")
        return site, time.monotonic() - t0


def _installed_in(name: str, site: Path) -> bool:
    import importlib_metadata as metadata

    return any(canonical(d.metadata["Name"]) == canonical(name)
               for d in metadata.distributions(path=[str(site)]))


def image_venv(wheel: Path, dest: Path, base: Path) -> Path:
    """A fresh virtual environment in `dest` that holds `wheel` (installed `--no-deps`)
    and sees the packages of the site directory `base` (a .pth line:
    `site.addsitedir`), and nothing else; returns its python. `base` is not touched."""
    subprocess.run([_python310(), "-m", "venv", "--without-pip", str(dest)], check=True)
    (_site_packages(dest) / "_daian_image_base.pth").write_text(
        f"import site; site.addsitedir({str(base)!r})\n")
    python = dest / "bin" / "python"
    subprocess.run([str(python), "-I", "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", "--no-deps", "--no-index",
                    "--no-compile", str(wheel)], check=True, timeout=600, env=clean_env())
    return python


def clean_env(**extra) -> dict:
    """The environment of a process in the image's environment: no PYTHONPATH, no
    virtualenv of the test run, quiet TensorFlow."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", **extra)
    return env


def installed(python: Path) -> Dict[str, str]:
    """{canonical name: version} of every distribution `python` sees."""
    code = ("import importlib.metadata as m, json; print(json.dumps("
            "{d.metadata['Name']: d.version for d in m.distributions()}))")
    out = subprocess.run([str(python), "-I", "-c", code], check=True, text=True,
                         capture_output=True, env=clean_env()).stdout
    import json

    return {canonical(k): v for k, v in json.loads(out).items()}
