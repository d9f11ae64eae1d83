"""What the Python tests share: failures, bounded waits, free ports."""
import socket
import time


class Failure(Exception):
    pass


def check(cond, message):
    if not cond:
        raise Failure(message)


def wait_until(predicate, seconds, what, poll=0.02):
    """Polls predicate until it returns a true value, which it returns;
    Failure after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise Failure(f"waited {seconds} s for {what}")
        time.sleep(poll)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
