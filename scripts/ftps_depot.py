"""A sender's upload over explicit FTPS, for the scripts that drive `atmp serve`
(scripts/hostile, scripts/crash-test). The platform's certificate is self-signed and local:
it is not checked here (the sender's own client, `atmp send`, does check it)."""

import ftplib
import ssl
import time


def upload(address, user, password, name, src, timeout=600):
    """Uploads the bytes of `src` (a file object) as `name`; returns the server's final reply.
    Raises ftplib's errors when the server refuses."""
    host, port = address.rsplit(":", 1)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for attempt in range(100):
        try:
            f = ftplib.FTP_TLS(context=ctx, timeout=timeout)
            f.connect(host, int(port))
            break
        except OSError:
            if attempt == 99:
                raise
            time.sleep(0.1)
    try:
        f.login(user, password)
        f.prot_p()
        # ftplib's storbinary, but with a TLS close of the data channel tolerant of a server
        # that closes it without a close_notify of its own.
        f.voidcmd("TYPE I")
        conn = f.transfercmd(f"STOR {name}")
        try:
            while True:
                b = src.read(1 << 20)
                if not b:
                    break
                try:
                    conn.sendall(b)
                except (ssl.SSLError, OSError):
                    # Cut by the server: its reply says why.
                    conn.close()
                    return f.voidresp()
        finally:
            try:
                conn.unwrap()
            except (ssl.SSLError, OSError, ValueError):
                pass
            conn.close()
        return f.voidresp()
    finally:
        try:
            f.quit()
        except Exception:
            pass
