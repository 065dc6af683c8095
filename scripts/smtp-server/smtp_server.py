"""A real SMTP server (aiosmtpd) for pedm's mail tests (crates/pedm/tests/email.rs).

    smtp_server.py --port N --dir DIR --cert CERT --key KEY --user U --password P

Listens on 127.0.0.1:N, requires STARTTLS before anything else and AUTH (PLAIN or LOGIN)
with U/P before MAIL; each message received is written to DIR/NNNN.eml and announced on
stdout as one JSON line {"file", "from", "to"}, so the test awaits mail as events. "ready"
is printed once the server listens. It runs until stdin closes.
"""

import argparse
import json
import logging
import os
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Save:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += 1
            name = os.path.join(self.directory, f"{self.count:04}.eml")
        tmp = name + ".tmp"
        with open(tmp, "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, name)
        line = {"file": name, "from": envelope.mail_from, "to": envelope.rcpt_tos}
        print(json.dumps(line), flush=True)
        return "250 OK"


def main():
    # aiosmtpd logs a warning about its own deprecated attribute on every AUTH.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    a = p.parse_args()

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == a.user.encode()
            and auth_data.password == a.password.encode()
        )
        if not ok:
            print(json.dumps({"auth_failed": mechanism}), flush=True)
        # handled=False: aiosmtpd answers 535 itself.
        return AuthResult(success=ok, handled=False)

    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(a.cert, a.key)
    controller = Controller(
        Save(a.dir),
        hostname="127.0.0.1",
        port=a.port,
        server_hostname="localhost",
        tls_context=tls,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=authenticator,
    )
    controller.start()
    print("ready", flush=True)
    sys.stdin.read()
    controller.stop()


if __name__ == "__main__":
    main()
