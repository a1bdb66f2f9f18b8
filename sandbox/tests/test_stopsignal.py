"""Signal handling of the sandbox's long-running programs: the handler only sets a flag, the main thread shuts down.

The main thread wakes whichever thread the signal landed on and whatever lock was held."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import fleetserve_sandbox

PACKAGE = Path(fleetserve_sandbox.__file__).resolve().parent


def run_script(body: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(body)], capture_output=True, text=True,
                          timeout=timeout)


def test_signal_on_another_thread_wakes_the_waiting_main_thread():
    # The kernel may deliver SIGTERM to any thread. Here it lands on a worker once the main thread
    # sleeps in wait(): only the wakeup pipe can wake it (without it, this run would hang).
    proc = run_script("""
        import signal, threading
        from fleetserve_sandbox.stopsignal import StopSignal
        stop = StopSignal()
        main_wchan = f"/proc/self/task/{threading.get_native_id()}/wchan"

        def signal_once_main_sleeps():
            for _ in range(100000):  # bounded: reads of the main thread's kernel wait channel
                with open(main_wchan) as fh:
                    if "poll" in fh.read():  # in select(): poll_schedule_timeout
                        break
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

        threading.Thread(target=signal_once_main_sleeps).start()
        print(stop.wait(), stop.name)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "SIGTERM"]


def test_signal_while_the_main_thread_holds_the_output_lock():
    # The stand-in's old handler printed under a lock the interrupted main thread could hold: it hung.
    proc = run_script("""
        import os, signal, sys, threading
        from fleetserve_sandbox.stopsignal import StopSignal
        stop = StopSignal()
        output_lock = threading.Lock()
        with output_lock:  # the signal arrives (and its handler runs) while this thread holds the lock
            os.kill(os.getpid(), signal.SIGINT)
            sys.stdout.write("in the locked region\\n")
        print(stop.wait(timeout=20), stop.name)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[1].split() == ["True", "SIGINT"]


def test_wait_times_out_without_a_signal():
    proc = run_script("""
        from fleetserve_sandbox.stopsignal import StopSignal
        stop = StopSignal()
        print(stop.wait(timeout=0.05), repr(stop.name))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "''"]


def test_wait_until_wakes_on_notify_from_another_thread_and_on_a_signal():
    proc = run_script("""
        import os, signal, threading
        from fleetserve_sandbox.stopsignal import StopSignal
        stop = StopSignal()
        state = {"done": False}
        gate = threading.Event()

        def finish():
            gate.wait(20)
            state["done"] = True
            stop.notify()

        threading.Thread(target=finish).start()
        gate.set()
        print(stop.wait_until(lambda: state["done"], timeout=20), stop.received)  # woken by notify()
        print(stop.wait_until(lambda: False, timeout=0.05))  # bounded
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()
        print(stop.wait_until(lambda: False, timeout=20), stop.name)  # a signal ends the wait too
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "None", "False", "False", "SIGTERM"]


def test_apt_proxy_exits_zero_on_sigterm_right_after_start():
    proc = subprocess.Popen([sys.executable, "-m", "fleetserve_sandbox.aptproxy", "--bind", "127.0.0.1", "--port",
                             "0", "--allow", "mirror.invalid:80"], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr.readline().startswith("apt proxy on 127.0.0.1:")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert "stopped on SIGTERM" in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


def test_only_stopsignal_installs_signal_handlers():
    """Every long-running program of the sandbox (hub, apt proxy, stand-in vllm) takes its signal
    handling from stopsignal.py; a handler written anywhere else is a place the old hang can return."""
    sources = [p for p in PACKAGE.rglob("*") if p.is_file() and p.suffix in ("", ".py") and p.name != "stopsignal.py"]
    assert any(p.name == "vllm" for p in sources) and any(p.name == "npu-smi" for p in sources)
    offenders = [f"{p.relative_to(PACKAGE)}:{n}" for p in sources
                 for n, line in enumerate(p.read_text(errors="replace").splitlines(), start=1)
                 if re.search(r"\bsignal\.(signal|set_wakeup_fd)\(", line)]
    assert offenders == []
