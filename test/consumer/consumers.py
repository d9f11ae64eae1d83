#!/usr/bin/env python3
"""Builds programs against loopsvc the ways README.md tells users to, and
runs them.

The build files are the README's snippets (see extract_snippets.py); the
program is app.c beside this script. Steps:

  1. `meson install --destdir TMP/dest` of the build under test, then checks
     what it installed: the shared library and its soname links, the static
     library, the header and the pkg-config module.
  2. Against that installed copy, found through pkg-config with
     PKG_CONFIG_PATH and PKG_CONFIG_SYSROOT_DIR=TMP/dest: the Meson
     (pkg-config), CMake and plain Make snippets, and a static link.
  3. The Meson subproject snippet, with a copy of the library's source tree
     in subprojects/loopsvc.

Every program must run and report three runs of its service; each
dynamically linked one must have loaded the libloopsvc.so.SOVERSION it was
meant to (the installed one, or the subproject's). Any failure prints the
command, its output and the build system's log. Every step is bounded in
time, and TMP is removed at the end, whatever happened.

It also checks that README.md names the installed library and soname of
this version. Its inputs come from test/consumer/meson.build, in the
environment: LSVC_BUILD_ROOT, LSVC_SOURCE_ROOT, LSVC_LIBDIR and
LSVC_INCLUDEDIR (absolute), LSVC_VERSION, LSVC_SOVERSION, LSVC_SANITIZE
(b_sanitize) and CC.
"""
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SKIP = 77

SNIPPETS = {
    "meson-subproject": "meson-subproject/meson.build",
    "meson-pkgconfig": "meson-pkgconfig/meson.build",
    "cmake": "cmake/CMakeLists.txt",
    "make": "make/Makefile",
}

# What a project that uses loopsvc as a subproject needs of its tree: the
# top meson.build reads the header and enters lib/ and doc/, and doc/ makes
# the manual page from the header and README.md; test/ and bench/ are not
# entered in a subproject.
SUBPROJECT_TREE = ["meson.build", "meson_options.txt", "README.md", "include", "lib", "doc", "tools"]

STEP_TIMEOUT = 300  # seconds, for any one command
RUN_TIMEOUT = 60    # seconds, for a consumer program
LOG_LINES = 60      # lines shown of a build system's log on a failure

children = set()    # process groups of the commands running now


class Failure(Exception):
    pass


def env_in(name):
    value = os.environ.get(name)
    if not value:
        raise Failure(f"{name} is not set: run this through `meson test`")
    return value


def run(cmd, cwd=None, env=None, timeout=STEP_TIMEOUT, logs=()):
    """Runs cmd and returns its output (stdout and stderr together). On a
    nonzero exit or a timeout, prints the end of each file of logs that
    exists and the output, and raises Failure."""
    cmd = [str(c) for c in cmd]
    shown = " ".join(shlex.quote(c) for c in cmd)
    start = time.monotonic()
    # Its own process group, so that a timeout ends the compilers a build
    # tool started too.
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", start_new_session=True)
    children.add(proc.pid)
    try:
        out, _ = proc.communicate(timeout=timeout)
        problem = None if proc.returncode == 0 else f"exit status {proc.returncode}"
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        out, _ = proc.communicate()
        problem = f"timed out after {timeout} s"
    finally:
        kill_group(proc.pid)  # anything it left behind
        children.discard(proc.pid)
    print(f"  $ {shown}  ({time.monotonic() - start:.1f} s)", flush=True)
    if problem is None:
        return out
    # The logs first and the command's own output last, next to the
    # verdict: `meson test --print-errorlogs` shows the end of a long log.
    report = []
    for log in logs:
        if os.path.isfile(log):
            with open(log, errors="replace") as f:
                lines = f.read().rstrip().splitlines()
            report += [f"=== {log}" + (f" (its last {LOG_LINES} lines)"
                                       if len(lines) > LOG_LINES else "") + " ===",
                       *lines[-LOG_LINES:]]
    report += [f"=== output of: {shown} (in {cwd or os.getcwd()}) ===", out.rstrip()]
    print("\n".join(report), file=sys.stderr, flush=True)
    raise Failure(f"{shown}: {problem}")


def kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def need(tool, package):
    path = shutil.which(tool)
    if path is None:
        raise Failure(f"{tool} not found (Debian package {package})")
    return path


def check(cond, message):
    if not cond:
        raise Failure(message)


def readelf_dynamic(readelf, path):
    """NEEDED, SONAME and RPATH/RUNPATH entries of an ELF file."""
    out = run([readelf, "-d", path])
    entries = {"NEEDED": [], "SONAME": [], "RPATH": [], "RUNPATH": []}
    for line in out.splitlines():
        for tag in entries:
            if f"({tag})" in line and "[" in line:
                entries[tag].append(line[line.index("[") + 1:line.rindex("]")])
    return entries


def check_loads(tools, exe, soname, expected, env):
    """exe needs soname, and the dynamic loader finds it at expected."""
    dyn = readelf_dynamic(tools["readelf"], exe)
    check(soname in dyn["NEEDED"],
          f"{exe} does not need {soname}; NEEDED: {', '.join(dyn['NEEDED'])}")
    out = run([tools["ldd"], exe], env=env)
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == soname:
            check(len(parts) >= 3 and parts[1] == "=>" and os.path.isfile(parts[2]),
                  f"ldd {exe}: {soname} is not found:\n{out}")
            check(os.path.realpath(parts[2]) == os.path.realpath(expected),
                  f"{exe} loads {parts[2]}, not {expected}:\n{out}")
            return
    raise Failure(f"ldd {exe} does not list {soname}:\n{out}")


def run_app(exe, version, env):
    out = run([exe], env=env, timeout=RUN_TIMEOUT)
    want = f"loopsvc {version}: Ticker ran 3 times"
    check(want in out, f"{exe} printed no {want!r}:\n{out}")
    print(f"    {want}", flush=True)


def install(tools, cfg, dest):
    """meson install into dest; checks what was installed and returns the
    installed libdir."""
    # Only the library, the header and the pkg-config module (tags runtime
    # and devel): what this checks, and what meson.build makes this test
    # depend on, as `meson test` builds only what the tests depend on.
    run([tools["meson"], "install", "-C", cfg["build"], "--destdir", dest,
         "--no-rebuild", "--tags", "runtime,devel"])
    libdir = dest + cfg["libdir"]
    version, so = cfg["version"], cfg["soversion"]
    real = f"libloopsvc.so.{version}"
    for name, target in [(f"libloopsvc.so.{so}", real), ("libloopsvc.so", f"libloopsvc.so.{so}")]:
        path = os.path.join(libdir, name)
        check(os.path.islink(path) and os.readlink(path) == target,
              f"{path} is not a link to {target}")
    for path in [os.path.join(libdir, real), os.path.join(libdir, "libloopsvc.a"),
                 os.path.join(dest + cfg["includedir"], "loopsvc.h"),
                 os.path.join(libdir, "pkgconfig", "loopsvc.pc")]:
        check(os.path.isfile(path) and not os.path.islink(path), f"{path} was not installed")
    dyn = readelf_dynamic(tools["readelf"], os.path.join(libdir, real))
    check(dyn["SONAME"] == [f"libloopsvc.so.{so}"],
          f"{real}: soname {dyn['SONAME']}, not libloopsvc.so.{so}")
    check(not dyn["RPATH"] and not dyn["RUNPATH"],
          f"installed {real} keeps a search path: {dyn['RPATH'] + dyn['RUNPATH']}")
    return libdir


def project(tmp, kind, snippets):
    """A directory with app.c and the snippet of kind."""
    proj = os.path.join(tmp, kind)
    shutil.copytree(os.path.join(snippets, os.path.dirname(SNIPPETS[kind])), proj)
    shutil.copy(os.path.join(HERE, "app.c"), proj)
    return proj


def cmake_compiler_args(cc):
    """CC may be a launcher and a compiler ("ccache cc"), which CMake takes
    apart only when told."""
    words = shlex.split(cc)
    args = [f"-DCMAKE_C_COMPILER={words[-1]}"]
    if len(words) > 1:
        args.append(f"-DCMAKE_C_COMPILER_LAUNCHER={';'.join(words[:-1])}")
    return args


def main():
    sanitize = os.environ.get("LSVC_SANITIZE", "none")
    if sanitize not in ("", "none"):
        print(f"skipped: built with b_sanitize={sanitize}; programs built against the "
              "installed library would need the sanitizer runtime")
        return SKIP

    cfg = {
        "build": env_in("LSVC_BUILD_ROOT"),
        "source": env_in("LSVC_SOURCE_ROOT"),
        "libdir": env_in("LSVC_LIBDIR"),
        "includedir": env_in("LSVC_INCLUDEDIR"),
        "version": env_in("LSVC_VERSION"),
        "soversion": env_in("LSVC_SOVERSION"),
        "cc": env_in("CC"),
    }
    soname = f"libloopsvc.so.{cfg['soversion']}"
    tools = {
        "meson": need("meson", "meson"),
        "ninja": need("ninja", "ninja-build"),
        "pkg-config": need("pkg-config", "pkg-config"),
        "cmake": need("cmake", "cmake"),
        "make": need("make", "make"),
        "readelf": need("readelf", "binutils"),
        "ldd": need("ldd", "libc-bin"),
    }
    jobs = ["-j", "2"]  # other tests run meanwhile

    tmp = tempfile.mkdtemp(prefix="loopsvc-consumers-")
    try:
        snippets = os.path.join(tmp, "snippets")
        readme = os.path.join(cfg["source"], "README.md")
        print("README snippets:", flush=True)
        run([sys.executable, os.path.join(HERE, "extract_snippets.py"),
             readme, snippets, *SNIPPETS.values()])
        with open(readme, encoding="utf-8") as f:
            text = f.read()
        for name in (f"libloopsvc.so.{cfg['version']}", soname):
            check(f"`{name}`" in text, f"{readme} does not name `{name}` (what "
                  "`meson install` installs): is its install paragraph out of date?")

        print("install:", flush=True)
        dest = os.path.join(tmp, "dest")
        libdir = install(tools, cfg, dest)
        installed_so = os.path.join(libdir, soname)

        # Builds against the installed copy see it through pkg-config alone.
        env = dict(os.environ)
        env.pop("PKG_CONFIG_LIBDIR", None)
        env.update(PKG_CONFIG_PATH=os.path.join(libdir, "pkgconfig"),
                   PKG_CONFIG_SYSROOT_DIR=dest)
        run_env = dict(env, LD_LIBRARY_PATH=libdir)

        print("pkg-config:", flush=True)
        pc = tools["pkg-config"]
        got = run([pc, "--modversion", "loopsvc"], env=env).strip()
        check(got == cfg["version"], f"pkg-config --modversion loopsvc: {got}, not {cfg['version']}")
        cflags = run([pc, "--cflags", "loopsvc"], env=env).split()
        check(f"-I{dest}{cfg['includedir']}" in cflags,
              f"pkg-config --cflags loopsvc: {cflags}: not the installed header "
              "(does this pkg-config honour PKG_CONFIG_SYSROOT_DIR?)")
        libs = run([pc, "--static", "--libs", "loopsvc"], env=env).split()
        check(f"-L{libdir}" in libs and "-lloopsvc" in libs,
              f"pkg-config --static --libs loopsvc: {libs}: not the installed library")

        print("Meson, pkg-config:", flush=True)
        proj = project(tmp, "meson-pkgconfig", snippets)
        build = os.path.join(proj, "build")
        log = [os.path.join(build, "meson-logs", "meson-log.txt")]
        run([tools["meson"], "setup", build, proj, "--wrap-mode=nofallback"], env=env, logs=log)
        run([tools["meson"], "compile", "-C", build, *jobs], env=env, logs=log)
        exe = os.path.join(build, "app")
        check_loads(tools, exe, soname, installed_so, run_env)
        run_app(exe, cfg["version"], run_env)

        print("CMake, pkg-config:", flush=True)
        proj = project(tmp, "cmake", snippets)
        build = os.path.join(proj, "build")
        log = [os.path.join(build, "CMakeFiles", "CMakeError.log")]
        run([tools["cmake"], "-S", proj, "-B", build, *cmake_compiler_args(cfg["cc"])],
            env=env, logs=log)
        run([tools["cmake"], "--build", build, "--verbose", *jobs], env=env, logs=log)
        exe = os.path.join(build, "app")
        check_loads(tools, exe, soname, installed_so, run_env)
        run_app(exe, cfg["version"], run_env)

        print("Make, pkg-config:", flush=True)
        proj = project(tmp, "make", snippets)
        run([tools["make"], "-C", proj], env=env)
        exe = os.path.join(proj, "app")
        check_loads(tools, exe, soname, installed_so, run_env)
        run_app(exe, cfg["version"], run_env)

        print("static library:", flush=True)
        exe = os.path.join(tmp, "app-static")
        static = os.path.join(libdir, "libloopsvc.a")
        run([*shlex.split(cfg["cc"]), *cflags, os.path.join(HERE, "app.c"), "-o", exe,
             *[static if a == "-lloopsvc" else a for a in libs]], env=env)
        dyn = readelf_dynamic(tools["readelf"], exe)
        check(not any(n.startswith("libloopsvc") for n in dyn["NEEDED"]),
              f"{exe} is not linked statically: NEEDED {dyn['NEEDED']}")
        run_app(exe, cfg["version"], dict(os.environ, LD_LIBRARY_PATH=""))

        print("Meson, subproject:", flush=True)
        proj = project(tmp, "meson-subproject", snippets)
        sub = os.path.join(proj, "subprojects", "loopsvc")
        for item in SUBPROJECT_TREE:
            src = os.path.join(cfg["source"], item)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(sub, item))
            else:
                os.makedirs(sub, exist_ok=True)
                shutil.copy(src, sub)
        build = os.path.join(proj, "build")
        log = [os.path.join(build, "meson-logs", "meson-log.txt")]
        sub_env = dict(os.environ)  # no installed loopsvc to find
        for var in ("PKG_CONFIG_PATH", "PKG_CONFIG_SYSROOT_DIR", "LD_LIBRARY_PATH"):
            sub_env.pop(var, None)
        run([tools["meson"], "setup", build, proj, "--force-fallback-for=loopsvc"],
            env=sub_env, logs=log)
        run([tools["meson"], "compile", "-C", build, *jobs], env=sub_env, logs=log)
        check(not os.path.isdir(os.path.join(build, "subprojects", "loopsvc", "test")),
              "the subproject built loopsvc's tests")
        exe = os.path.join(build, "app")
        check_loads(tools, exe, soname,
                    os.path.join(build, "subprojects", "loopsvc", "lib", soname), sub_env)
        run_app(exe, cfg["version"], sub_env)
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("every README build snippet builds a program that runs")
    return 0


def on_signal(signum, frame):
    """meson test ends a test that timed out with SIGTERM: take the builds
    down with it, and let main's finally remove the temporary tree."""
    for pgid in list(children):
        kill_group(pgid)
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        sys.exit(main())
    except Failure as e:  # before the temporary tree exists
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
