"""Small QMP client (stdlib only) for qemu-storage-daemon, used by fcbench.py.

One unix-socket connection; command replies and asynchronous events are
separated on read, events are kept (bounded) until someone waits for them.
"""
import json
import socket
import time


class QMPError(RuntimeError):
    pass


class QMPClient:
    MAX_EVENTS = 4096

    def __init__(self, path, connect_timeout=15.0, io_timeout=300.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"QMP socket {path} did not come up")
                time.sleep(0.02)
        self.io_timeout = io_timeout
        self.sock.settimeout(io_timeout)
        self.rfile = self.sock.makefile("rb")
        self.events = []
        hello = self._recv()
        if "QMP" not in hello:
            raise QMPError(f"unexpected greeting {hello}")
        self.execute("qmp_capabilities")

    def _recv(self):
        line = self.rfile.readline()
        if not line:
            raise EOFError("QMP connection closed")
        return json.loads(line)

    def _keep(self, ev):
        self.events.append(ev)
        if len(self.events) > self.MAX_EVENTS:
            # JOB_STATUS_CHANGE floods: keep the newest half.
            del self.events[: self.MAX_EVENTS // 2]

    def execute(self, command, **arguments):
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._recv()
            if "event" in r:
                self._keep(r)
            elif "error" in r:
                raise QMPError(f"{command}: {r['error'].get('desc', r['error'])}")
            else:
                return r.get("return")

    def timed(self, command, **arguments):
        """(result, seconds): the round trip of one command on the open socket."""
        t = time.perf_counter()
        r = self.execute(command, **arguments)
        return r, time.perf_counter() - t

    def wait_event(self, names, timeout=120.0, match=None):
        names = {names} if isinstance(names, str) else set(names)
        deadline = time.monotonic() + timeout
        try:
            while True:
                for i, ev in enumerate(self.events):
                    if ev["event"] in names and (match is None or match(ev)):
                        return self.events.pop(i)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no QMP event {sorted(names)} within {timeout}s")
                self.sock.settimeout(left)
                try:
                    self._keep(self._recv())
                except socket.timeout:
                    raise TimeoutError(f"no QMP event {sorted(names)} within {timeout}s")
        finally:
            self.sock.settimeout(self.io_timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
