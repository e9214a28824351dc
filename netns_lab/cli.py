"""Command-line entry points, shared by ``invoke`` tasks and the ``netns-lab`` command.

Exit codes (DESIGN.md): 0 every check passed, 1 a check failed, 2 the scenario is invalid
(nothing was built); 3 the lab could not be built or the machine cannot run it (no root, a lab
of that name already up); 130 / 143 interrupted by SIGINT (Ctrl-C) / SIGTERM (after tearing down).
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from netns_lab import cleanup, interrupts, state
from netns_lab.errors import LabError, ScenarioError

if TYPE_CHECKING:
    from netns_lab.controllers.topology import Topology

EXIT_OK, EXIT_CHECK_FAILED, EXIT_INVALID, EXIT_BUILD = 0, 1, 2, 3
SPREAD_HELP = "IP,IP[,IP]: build this machine's share of a lab spread over these machines (run it on each)"
PEER_TIMEOUT = 600.0  # how long a spread lab's machine waits for the others (VMs started by hand)
SCENARIO_DIRS = ("scenarios",)


def install_signal_handlers() -> None:
    """Ctrl-C and ``kill`` stop a command the same way: the report so far is printed, the lab
    torn down, exit 130 / 143 (see interrupts.py)."""
    interrupts.install()


_shielded = interrupts.deferred  # a teardown runs to its end; a signal meanwhile is raised after it


CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21  # linux/capability.h


def missing_capabilities() -> list[str]:
    """The capabilities a lab needs that this process does not have in effect (CapEff of
    /proc/self/status: a root process in a container or under ``capsh --drop`` may lack them)."""
    try:
        with open("/proc/self/status") as fh:
            eff = next(int(line.split()[1], 16) for line in fh if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        eff = 0
    return [name for bit, name in ((CAP_SYS_ADMIN, "CAP_SYS_ADMIN"), (CAP_NET_ADMIN, "CAP_NET_ADMIN")) if not eff >> bit & 1]


def _privilege_error(command: str) -> LabError | None:
    missing = missing_capabilities()
    if not missing:
        return None
    if os.geteuid() != 0:
        return LabError(f"{command}: needs root (network namespaces, {' and '.join(missing)}): run it with sudo")
    return LabError(f"{command}: needs {' and '.join(missing)}, which this root process lacks "
                    "(a container without --privileged, or capabilities dropped)")


def _need_privileges(command: str) -> None:
    err = _privilege_error(command)
    if err is not None:
        raise err


def resolve_scenario(name: str) -> str:
    """A path, or the name of a file in ``scenarios/`` (``basic`` -> scenarios/basic.yaml)."""
    if os.path.exists(name) or os.sep in name or name.endswith((".yaml", ".yml")):
        return name
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for d in (os.path.join(os.getcwd(), "scenarios"), os.path.join(here, "scenarios")):
        for ext in (".yaml", ".yml"):
            candidate = os.path.join(d, name + ext)
            if os.path.exists(candidate):
                return os.path.relpath(candidate)
    return name


_KEY_SEGMENT = re.compile(r"[^.=\s]+")


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``--set cluster.network=host-gw``: KEY is dot-separated non-empty segments, VALUE is
    YAML (``--set cluster.nodes=3`` is a number). A malformed one is one line, exit 2."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        shown = item if item.isprintable() else json.dumps(item)  # one line, whatever was typed

        def bad(message: str) -> ScenarioError:
            return ScenarioError(f"--set {shown}", "", message)

        key, sep, value = item.partition("=")
        if not sep:
            raise bad("Invalid value: expected KEY=VALUE (e.g. cluster.network=host-gw)")
        if not key:
            raise bad("Invalid value: the key is empty: expected KEY=VALUE (e.g. cluster.network=host-gw)")
        if not all(_KEY_SEGMENT.fullmatch(part) for part in key.split(".")):
            raise bad(f"Invalid value: {json.dumps(key)}: a key is field names separated by single dots (e.g. cluster.network)")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise bad(f"Invalid value: not a YAML value: {problem}") from None
        except RecursionError:
            raise bad("Invalid value: not a YAML value: nested too deeply") from None
    return out


def _load(file: str, overrides: dict[str, Any], spread_over: str = ""):  # type: ignore[no-untyped-def]
    from netns_lab.lab import Lab

    return Lab.from_file(resolve_scenario(file), overrides, spread_over)


def _os_error(command: str, exc: OSError) -> str:
    """One line for an OSError no layer below turned into a LabError (EACCES, EPERM, EBUSY
    when the machine will not let us): what failed, on what, and the likely cause."""
    name = errno.errorcode.get(exc.errno or 0, "")
    what = exc.strerror or str(exc)
    where = f": {exc.filename}" if exc.filename else ""
    hint = ""
    if _privilege_error(command) is not None and exc.errno in (errno.EPERM, errno.EACCES, errno.EBUSY, errno.EROFS):
        hint = " (needs root: run it with sudo)"
    return f"{command}: {what}{f' ({name})' if name else ''}{where}{hint}"


def _guard(fn):  # type: ignore[no-untyped-def]
    """Map the error tree to exit codes with one clear line on stderr; no traceback for bad
    input, a machine that says no, or an interruption (which exits 128 + the signal)."""
    return guarded(fn, {"exec_in": "exec"}.get(fn.__name__, fn.__name__.replace("_", "-")))


def guarded(fn, command: str):  # type: ignore[no-untyped-def]
    """:func:`_guard`, naming ``command`` in the one line an OSError gets (the lab's API server
    runs each request through it, so a refusal reads the same from either side)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kw: Any) -> int:
        interrupts.reset()
        try:
            return fn(*args, **kw)
        except ScenarioError as exc:
            for line in str(exc).splitlines():  # several mistakes: one line each
                print(f"error: {line}", file=sys.stderr)
            return EXIT_INVALID
        except LabError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BUILD
        except KeyboardInterrupt as exc:  # Interrupted (SIGINT, SIGTERM) or a plain Ctrl-C
            signum = getattr(exc, "signum", signal.SIGINT)
            print(f"interrupted by {signal.Signals(signum).name}", file=sys.stderr, flush=True)
            return 128 + signum
        except OSError as exc:
            print(f"error: {_os_error(command, exc)}", file=sys.stderr)
            return EXIT_BUILD

    return wrapper


@_guard
def run_scenario(file: str, keep: bool = False, overrides: Sequence[str] = (), out=sys.stdout, junit: str = "",  # type: ignore[no-untyped-def]
                 json_path: str = "", spread_over: str = "", peer_timeout: float = PEER_TIMEOUT) -> int:
    """Build the scenario, run its checks, print a report, tear down (unless ``keep``);
    ``junit`` / ``json_path`` also write JUnit XML / JSON reports.

    ``spread_over`` (``IP,IP[,IP]``): this machine's share of a lab spread over several (run
    the same command on each). Each machine waits until the others are up, runs the checks
    whose source it holds, and waits until the others have run theirs before tearing down."""
    from netns_lab.probes import peers
    from netns_lab.probes.checks import CheckOutcome, run_checks, runs_here
    from netns_lab.probes.report import print_header, print_outcome, print_summary, write_reports

    lab = _load(file, parse_overrides(overrides), spread_over)
    _need_privileges("run-scenario")
    spread = lab.topology.is_spread

    def say(message: str) -> None:
        print(message, file=out, flush=True)

    outcomes: list[CheckOutcome] = []
    planned: int | None = None  # checks to run here, once known; None again once summarised
    t0 = time.monotonic()
    lab.temporary = not keep
    _up_with_progress(lab)  # interrupted: up() removes what it made
    try:  # nothing between up() and here: a signal in a gap would leave the lab up
        built = time.monotonic() - t0
        checks = lab.scenario.checks
        if spread:
            peers.wait_for(lab, ("up", "checked"), peer_timeout, say=say)
            lab.wait_balancer_rounds()  # the cloud LB (first machine) sees the others' nodes healthy
            checks = tuple(c for c in checks if runs_here(lab, c))
        planned = len(checks)
        print_header(lab, built, out, planned)
        run_checks(lab, checks, outcomes, on_outcome=lambda o: print_outcome(o, out))  # each line as it is known
        if spread:
            lab.mark_checked()
        planned = None
        print_summary(outcomes, out)
        write_reports(lab, outcomes, built, junit, json_path)
        if spread and not keep:
            peers.wait_for(lab, ("checked",), peer_timeout, gone_ok=True, say=say)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM: the checks done so far, then "interrupted" (_guard)
        if planned is not None:
            print_summary(outcomes, out, planned)
        raise
    finally:
        with _shielded():  # a signal now does not cut the teardown short
            if not keep:
                lab.down()
            else:
                print(f"lab {lab.name} kept up: `invoke down {lab.name}` removes it", file=out)
    return EXIT_OK if all(o.passed for o in outcomes) else EXIT_CHECK_FAILED


def _up_with_progress(lab: Any) -> None:
    """``lab.up()`` with progress bars when a person is watching (see progress.py)."""
    from netns_lab.progress import bars

    with bars() as report:
        lab.progress = report
        try:
            lab.up()
        finally:
            lab.progress = None


@_guard
def up(file: str, overrides: Sequence[str] = (), out=sys.stdout, spread_over: str = "") -> int:  # type: ignore[no-untyped-def]
    lab = _load(file, parse_overrides(overrides), spread_over)
    _need_privileges("up")
    t0 = time.monotonic()
    _up_with_progress(lab)  # refuses a lab that is up; interrupted: removes what it made
    topo = lab.topology
    print(f"lab {lab.name} up in {time.monotonic() - t0:.2f}s: {len(topo.nodes)} nodes, {len(topo.pods)} pods, {topo.network}", file=out)
    if topo.is_spread:
        print(spread_summary(topo), file=out)
    return EXIT_OK


def spread_summary(topo: "Topology") -> str:
    """One line on this machine's share of a spread lab (``up``, ``status``)."""
    me = topo.hosts[topo.host]
    return (f"this machine is {me.name} ({me.ip}) of {len(topo.hosts)}: nodes {', '.join(n.name for n in topo.local_nodes)}, "
            f"{len(topo.local_pods)} pods" + ("; the router, external clients and cloud LB" if topo.has_outside else "")
            + f"; node network MTU {topo.underlay_mtu}")


@_guard
def down(name: str, out=sys.stdout) -> int:  # type: ignore[no-untyped-def]
    state.check_name(name, "down")  # the name is a path component: checked before any use
    _need_privileges("down")
    with _shielded():  # a removal runs to its end (a signal meanwhile: exit 130/143 after it)
        found = cleanup.remove_lab(name)
    if found.empty:
        print(f"lab {name}: nothing to remove", file=out)
    else:
        print(f"lab {name}: removed {len(found.namespaces)} namespaces, {len(found.processes)} processes", file=out)
    return EXIT_OK


@_guard
def clean(check: bool = False, out=sys.stdout) -> int:  # type: ignore[no-untyped-def]
    """Remove every lab's objects (by their records); ``check`` only lists them, exit 1 if any.
    A lab another command is building is left alone (exit 3)."""
    _need_privileges("clean")  # without root, processes are invisible: "nothing left" would be a guess
    if check:
        left = cleanup.all_leftovers()
        for lo in left:
            for line in lo.describe():
                print(line, file=out)
        if not left:
            print("nothing left behind", file=out)
        return EXIT_CHECK_FAILED if left else EXIT_OK
    with _shielded():
        removed = cleanup.clean_all()
    for lo in removed:
        if lo.busy:
            print(f"error: {lo.busy}", file=sys.stderr)
        else:
            print(f"lab {lo.lab}: removed {len(lo.namespaces)} namespaces, {len(lo.processes)} processes", file=out)
    if not removed:
        print("nothing to clean", file=out)
    return EXIT_BUILD if any(lo.busy for lo in removed) else EXIT_OK


def _change(lab_name: str, request: dict[str, Any], out: Any) -> int:
    """One change to a running lab, made by the lab's API server (apiserver.py, started on
    first use): it prints what this command prints, and exits as this command exits (2 and
    one line when the change is refused whole: nothing changed). A mistake that needs no lab
    to be seen (a missing argument, a malformed label) is refused here first."""
    from netns_lab import apiclient
    from netns_lab.scenario import verbs

    verbs.check(request)
    _need_privileges(request["verb"])
    if request["verb"] == "apply":
        request = {**request, "files": _read(request["files"])}
    rc, printed, errors = apiclient.call(lab_name, request)
    out.write(printed)
    sys.stderr.write(errors)
    return rc


def _read(files: Sequence[str]) -> list[list[str]]:
    """[name, text] of each file, read here (the user's directory, the same checks as a
    scenario's files: regular files, within the size limit); parsed by the API server."""
    from netns_lab.scenario.files import Budget, read_text

    return [[f, read_text(f, Budget())] for f in files]


@_guard
def apply(lab_name: str, files: Sequence[str], out=sys.stdout) -> int:  # type: ignore[no-untyped-def]
    """``kubectl apply -f FILE...``: every manifest of the files (``---`` separated, ``kind:
    List`` too), in order, as one change."""
    state.check_name(lab_name, "apply")
    return _change(lab_name, {"verb": "apply", "files": list(files)}, out)


@_guard
def delete(lab_name: str, refs: Sequence[str], grace_period: int | None = None,
           out=sys.stdout) -> int:  # type: ignore[no-untyped-def]
    """``kubectl delete KIND/NS/NAME...`` (a namespace takes what is in it). A pod deleted with
    a grace period (``grace_period``, else its terminationGracePeriodSeconds) stays terminating
    and serving that long, then goes; 0 removes it at once."""
    state.check_name(lab_name, "delete")
    request: dict[str, object] = {"verb": "delete", "refs": list(refs)}
    if grace_period is not None:
        request["gracePeriod"] = grace_period
    return _change(lab_name, request, out)


def grace_seconds(text: str | None) -> int | None:
    """``--grace-period S`` as typed: a whole number, else the text, which the request's
    validation refuses in one line (exit 2)."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return text  # type: ignore[return-value]


@_guard
def label(lab_name: str, ref: str, changes: Sequence[str], out=sys.stdout) -> int:  # type: ignore[no-untyped-def]
    """``kubectl label KIND/NS/NAME KEY=VALUE KEY-``: set or remove labels."""
    state.check_name(lab_name, "label")
    return _change(lab_name, {"verb": "label", "ref": ref, "changes": list(changes)}, out)


@_guard
def pod_ready(lab_name: str, pod: str, ready: bool = True, out=sys.stdout) -> int:  # type: ignore[no-untyped-def]
    """Mark a pod of a running lab ready / not ready (its readiness probe, in effect)."""
    state.check_name(lab_name, "pod-ready")
    return _change(lab_name, {"verb": "pod-ready", "pod": pod, "ready": ready}, out)


@_guard
def reconcile(lab_name: str, out=sys.stdout) -> int:  # type: ignore[no-untyped-def]
    """Bring the kernel, files and servers back to the lab's recorded objects (a full sync):
    after a change that was killed half way, or anything done to the lab by hand."""
    state.check_name(lab_name, "reconcile")
    return _change(lab_name, {"verb": "reconcile"}, out)


@_guard
def events(lab_name: str, follow: bool = False, out=sys.stdout) -> int:  # type: ignore[no-untyped-def]
    """What each change did, in order (``--follow``: then wait for more until the lab goes)."""
    from netns_lab import events as ev

    state.check_name(lab_name, "events")
    st = state.load(lab_name)
    if st is None or st.phase == "corrupt":
        raise LabError(f"lab {lab_name!r} is not up (see `invoke status`)")
    for e in ev.read(st.workdir, follow=follow):
        print(ev.format_event(e), file=out, flush=True)
    return EXIT_OK


@_guard
def bgp(lab_name: str, as_json: bool = False, out=sys.stdout) -> int:  # type: ignore[no-untyped-def]
    """The BGP sessions of every speaker and the router's learned routes (``birdc``)."""
    from netns_lab import bgpstatus
    from netns_lab.lab import Lab

    state.check_name(lab_name, "bgp")
    _need_privileges("bgp")
    lab = Lab.attach(lab_name)
    if not lab.topology.uses_bgp:
        raise LabError(f"lab {lab_name!r} runs no BGP (cluster.network and cluster.external.loadBalancer are not bgp)")
    data = bgpstatus.collect(lab.topology, lab.bgp_run_dir, lab.bgp_socket)
    print(json.dumps(data, indent=2) if as_json else bgpstatus.format_status(data), file=out)
    return EXIT_OK


@_guard
def exec_in(lab_name: str, target: str, command: Sequence[str], interactive: bool = False) -> int:
    """Run a real command in a pod or node of a running lab, as ``kubectl exec``: the pod's
    namespace, its resolv.conf and its Service environment variables."""
    from netns_lab.lab import Lab

    state.check_name(lab_name, "exec")
    _need_privileges("exec")
    lab = Lab.attach(lab_name)
    if not command:
        command = [os.environ.get("SHELL", "/bin/sh")]
    if interactive:
        import subprocess

        r = lab_ref(target)
        # Ctrl-C belongs to the shell in the pod (the terminal sends it to us too): ignored here,
        # default again in the child.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            return subprocess.call(["ip", "netns", "exec", lab.netns_of(r), *command], env=lab.exec_env(r),
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        finally:
            signal.signal(signal.SIGINT, previous)
    proc = lab.exec(lab_ref(target), list(command), timeout=3600)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    return proc.returncode


@_guard
def get(lab_name: str, kind: str, namespace: str = "default", all_namespaces: bool = False, output: str = "",
        out=sys.stdout) -> int:  # type: ignore[no-untyped-def]
    """``kubectl get pods|services|endpoints|endpointslices|ingress|networkpolicies`` for a running lab (reads its record: no root needed)."""
    import time as _time

    from netns_lab.lab import Lab
    from netns_lab.views import KINDS, age, render

    state.check_name(lab_name, "get")  # no root needed: it reads the record, if it may
    if kind not in KINDS:
        raise ScenarioError("get", "kind", f'Unsupported value: "{kind}": supported values: pods, services, endpoints, '
                                           'endpointslices, ingress, networkpolicies')
    if output not in ("", "wide", "json", "yaml"):
        raise ScenarioError("get", "-o", f'Unsupported value: "{output}": supported values: wide, json, yaml')
    lab = Lab.attach(lab_name)
    assert lab.state is not None
    text = render(kind, lab.pods, lab.services, lab.topology, None if all_namespaces else namespace, output,
                  age(_time.time() - lab.state.created), lab.ingresses, lab.objects.network_policies)
    print(text, file=out)
    return EXIT_OK


@_guard
def trace(lab_name: str, source: str, target: str, protocol: str = "tcp", as_json: bool = False, out=sys.stdout,  # type: ignore[no-untyped-def]
          family: str = "") -> int:
    """Send one packet and print its way: rules, routes, VXLAN, NAT, what the server saw."""
    from netns_lab.lab import Lab
    from netns_lab.probes import trace as tracer

    if lab_name:
        state.check_name(lab_name, "trace")
    _need_privileges("trace")
    lab = Lab.attach(lab_name or _only_lab())
    if family not in ("", "ipv4", "ipv6"):
        raise LabError(f"--family {family!r}: ipv4 or ipv6")
    t = tracer.trace(lab, lab_ref(source), target, protocol, family={"ipv4": 4, "ipv6": 6}.get(family))
    print(json.dumps(t.to_json(), indent=2) if as_json else tracer.render(t), file=out)
    return EXIT_OK if t.result == "ok" else EXIT_CHECK_FAILED


def _only_lab() -> str:
    labs = [n for n in state.all_labs() if (st := state.load(n)) is not None and st.phase == "up"]
    if len(labs) != 1:
        raise LabError(f"name the lab: {len(labs)} labs are up ({', '.join(labs) or 'none'})")
    return labs[0]


@_guard
def gen_cert(hosts: Sequence[str], out_dir: str = "certs", name: str = "", namespace: str = "default", out=sys.stdout) -> int:  # type: ignore[no-untyped-def]
    """A CA and a certificate for HOSTS, plus a kubernetes.io/tls Secret manifest (no root needed)."""
    from netns_lab.certs import generate, secret_name

    if not hosts:
        print("error: gen-cert: name at least one host", file=sys.stderr)
        return EXIT_INVALID
    paths = generate(list(hosts), out_dir, name, namespace)
    print(f"wrote {', '.join(paths.values())}", file=out)
    print(f"use it: objects: [{paths['secret.yaml']}] and, in checks, ca: secret/{namespace}/"
          f"{name or secret_name(list(hosts))}", file=out)
    return EXIT_OK


@_guard
def capture(lab_name: str, where: str, bpf: str = "", count: int = 20, seconds: float = 10.0, out_file: str = "",
            out=sys.stdout) -> int:  # type: ignore[no-untyped-def]
    """Capture on a lab interface into a pcap (Wireshark opens it) and print a scapy summary."""
    import time as _time

    from netns_lab.lab import Lab
    from netns_lab.probes.capture import Capture
    from netns_lab.probes.where import interface

    state.check_name(lab_name, "capture")
    _need_privileges("capture")
    lab = Lab.attach(lab_name)
    netns_name, ifname = interface(lab, where)
    cap = Capture(netns_name, ifname, limit=count, bpf=bpf or None)
    with cap:
        deadline = _time.monotonic() + seconds
        while len(cap.frames) < count and _time.monotonic() < deadline:
            _time.sleep(0.05)
    packets = cap.packets()
    for p in packets:
        print(p.summary(), file=out)
    if out_file:
        cap.write_pcap(out_file)
    # where (pod/NAME...) too: a long object name's namespace is shortened with a hash (kernelnames)
    print(f"{len(packets)} packets on {netns_name}/{ifname} ({where})" + (f", written to {out_file}" if out_file else ""), file=out)
    return EXIT_OK


@_guard
def graph(source: str, out_file: str = "", out=sys.stdout) -> int:  # type: ignore[no-untyped-def]
    """Draw a lab from a scenario file (no root, nothing built) or a running lab's name."""
    from netns_lab import graph as g
    from netns_lab.lab import Lab

    # a lab's name only if it is one (never a path built from "../x"); anything else is a file
    if not state.name_problems(source) and not os.path.exists(source) and state.load(source) is not None:
        lab = Lab.attach(source)
    else:
        lab = _load(source, {})
    dot_text = g.dot(lab.topology, lab.pods, lab.services, lab.objects.network_policies)
    ext = os.path.splitext(out_file)[1].lower()
    if ext in (".svg", ".png"):
        try:
            data = g.render(dot_text, ext[1:])
        except RuntimeError as exc:
            raise LabError(f"graph: {exc}") from None
        with open(out_file, "wb") as fh:
            fh.write(data)
    elif ext == ".mmd":
        with open(out_file, "w") as fh:
            fh.write(g.mermaid(lab.topology, lab.pods, lab.services))
    elif ext in (".dot", ".gv") or not out_file:
        if out_file:
            with open(out_file, "w") as fh:
                fh.write(dot_text)
        else:
            out.write(dot_text)
            return EXIT_OK
    else:
        raise ScenarioError("graph", "--out", f'Unsupported value: "{out_file}": the extension picks the format: .svg, .png, .mmd, .dot')
    print(f"wrote {out_file}", file=out)
    return EXIT_OK


def lab_ref(target: str) -> str:
    """``NAME`` means ``pod/NAME``; ``pod/...``, ``node/...`` and ``external`` pass through."""
    return target if "/" in target or target == "external" else f"pod/{target}"


@_guard
def status(out=sys.stdout) -> int:  # type: ignore[no-untyped-def]
    """List the labs. Without root it shows what the records say, says it cannot tell whether
    their servers run (their processes are not visible), and exits 3."""
    blind = _privilege_error("status")
    labs = state.all_labs()
    if not labs:
        print("no labs", file=out)
    for name in labs:
        st = state.load(name)
        lo = cleanup.leftovers(name)
        if st is None:
            continue
        topo = st.topology
        alive = "servers: cannot tell (needs root)" if blind else "serving" if lo.processes else "no servers"
        print(
            f"{name}: {st.phase}, {len(topo.get('nodes', []))} nodes, {len(topo.get('pods', []))} pods, "
            f"{topo.get('network', '?')}, {len(lo.namespaces)}/{len(st.namespaces)} namespaces, {alive} ({st.scenario})",
            file=out,
        )
        if len(topo.get("hosts", ())) > 1:
            from netns_lab.controllers.topology import from_dict

            print(f"  spread: {spread_summary(from_dict(topo))}", file=out)
        for svc in _recorded_services(st):  # status.loadBalancer.ingress, as the cloud assigned it
            if svc.load_balancer_ips:
                ports = ",".join(f"{p.port}/{p.protocol}" for p in svc.ports)
                print(f"  LoadBalancer {svc.key}: {', '.join(svc.load_balancer_ips)} ({ports})", file=out)
    if blind is not None:
        raise blind
    return EXIT_OK


def _recorded_services(st: state.LabState) -> tuple[Any, ...]:
    """The Services a lab's record holds; none while it is being built or if unreadable."""
    from netns_lab.objectlog import ObjectLog

    try:
        return ObjectLog.read(st.workdir).recorded.services  # type: ignore[union-attr]
    except (OSError, ValueError, KeyError):
        return ()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netns-lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run-scenario", help="build, check, report, tear down")
    p.add_argument("file")
    p.add_argument("--spread", default="", metavar="IP,IP[,IP]", help=SPREAD_HELP)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--junit", default="", metavar="FILE", help="also write a JUnit XML report")
    p.add_argument("--json", default="", metavar="FILE", help="also write a JSON report")
    p.add_argument("--peer-timeout", type=float, default=PEER_TIMEOUT, metavar="SECONDS",
                   help="spread: how long to wait for the other machines")
    p = sub.add_parser("up", help="build a lab and leave it running")
    p.add_argument("file")
    p.add_argument("--spread", default="", metavar="IP,IP[,IP]", help=SPREAD_HELP)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p = sub.add_parser("down", help="remove one lab")
    p.add_argument("name")
    p = sub.add_parser("clean", help="remove every lab's objects")
    p.add_argument("--check", action="store_true", help="only list leftovers; exit 1 if any")
    sub.add_parser("status", help="list labs")
    p = sub.add_parser("pod-ready", help="mark a pod ready or not ready")
    p.add_argument("lab")
    p.add_argument("pod")
    p.add_argument("--not-ready", action="store_true")
    p = sub.add_parser("apply", help="create or replace objects in a running lab (kubectl apply -f)")
    p.add_argument("lab")
    p.add_argument("files", nargs="+", metavar="FILE")
    p = sub.add_parser("delete", help="delete objects from a running lab: KIND/NS/NAME or KIND/NAME")
    p.add_argument("lab")
    p.add_argument("refs", nargs="+", metavar="KIND/[NS/]NAME")
    p.add_argument("--grace-period", dest="grace_period", default=None, metavar="SECONDS",
                   help="a pod stays terminating and serving this long (0: at once)")
    p = sub.add_parser("label", help="set (KEY=VALUE) or remove (KEY-) labels of an object of a running lab")
    p.add_argument("lab")
    p.add_argument("ref", metavar="KIND/[NS/]NAME")
    p.add_argument("changes", nargs="+", metavar="KEY=VALUE|KEY-")
    p = sub.add_parser("reconcile", help="bring a running lab back to its recorded objects (full sync)")
    p.add_argument("lab")
    p = sub.add_parser("events", help="what each change to a running lab did")
    p.add_argument("lab")
    p.add_argument("--follow", "-f", action="store_true")
    p = sub.add_parser("get", help="kubectl get pods|services|endpoints|endpointslices|ingress|networkpolicies for a running lab")
    p.add_argument("lab")
    p.add_argument("kind")
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("-o", "--output", default="")
    p = sub.add_parser("graph", help="draw a lab (scenario file or running lab)")
    p.add_argument("source", help="scenario file, name in scenarios/, or a running lab's name")
    p.add_argument("--out", default="", help=".svg, .png, .mmd (Mermaid) or .dot; none: DOT on stdout")
    p = sub.add_parser("capture", help="capture packets on a lab interface")
    p.add_argument("lab")
    p.add_argument("where", help="pod/NAME, node/NAME[:IFACE], underlay[:IFACE], external")
    p.add_argument("--filter", default="", help="BPF filter, as tcpdump takes it")
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--out", default="", help="pcap file to write")
    p = sub.add_parser("gen-cert", help="make a CA, a certificate for HOSTs and a TLS Secret manifest")
    p.add_argument("hosts", nargs="+")
    p.add_argument("--out", default="certs", help="directory for ca.crt, ca.key, tls.crt, tls.key, secret.yaml")
    p.add_argument("--name", default="", help="the Secret's name (default: from the first host)")
    p.add_argument("--namespace", default="default")
    p = sub.add_parser("trace", help="send one packet and show its way through rules, routes and tunnels")
    p.add_argument("lab", nargs="?", default="", help="the lab (default: the only one up)")
    p.add_argument("--from", dest="source", required=True, help="pod/NAME, node/NAME, external[/NAME]")
    p.add_argument("--to", dest="target", required=True, help="SERVICE:PORT, service/NS/NAME:PORT, pod/NAME:PORT, IP:PORT")
    p.add_argument("--protocol", default="tcp", choices=("tcp", "udp"))
    p.add_argument("--family", default="", choices=("", "ipv4", "ipv6"), help="which address of each object (dual-stack labs)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("bgp", help="BGP sessions of every speaker and the router's routes (calicoctl node status)")
    p.add_argument("lab")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("exec", help="run a command in a pod or node (kubectl exec)")
    p.add_argument("lab")
    p.add_argument("target", help="pod/[NS/]NAME, node/NAME or external")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    install_signal_handlers()
    if args.cmd == "graph":
        return graph(args.source, args.out)
    if args.cmd == "gen-cert":
        return gen_cert(args.hosts, args.out, args.name, args.namespace)
    if args.cmd == "trace":
        return trace(args.lab, args.source, args.target, args.protocol, args.json, family=args.family)
    if args.cmd == "capture":
        return capture(args.lab, args.where, args.filter, args.count, args.seconds, args.out)
    if args.cmd == "get":
        return get(args.lab, args.kind, args.namespace, args.all_namespaces, args.output)
    if args.cmd == "bgp":
        return bgp(args.lab, args.json)
    if args.cmd == "exec":
        cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
        return exec_in(args.lab, args.target, cmd, interactive=sys.stdin.isatty())
    if args.cmd == "pod-ready":
        return pod_ready(args.lab, args.pod, not args.not_ready)
    if args.cmd == "apply":
        return apply(args.lab, args.files)
    if args.cmd == "delete":
        return delete(args.lab, args.refs, grace_seconds(args.grace_period))
    if args.cmd == "label":
        return label(args.lab, args.ref, args.changes)
    if args.cmd == "reconcile":
        return reconcile(args.lab)
    if args.cmd == "events":
        return events(args.lab, args.follow)
    if args.cmd == "run-scenario":
        return run_scenario(args.file, args.keep, args.set, junit=args.junit, json_path=args.json, spread_over=args.spread,
                            peer_timeout=args.peer_timeout)
    if args.cmd == "up":
        return up(args.file, args.set, spread_over=args.spread)
    if args.cmd == "down":
        return down(args.name)
    if args.cmd == "clean":
        return clean(args.check)
    return status()


if __name__ == "__main__":
    sys.exit(main())
