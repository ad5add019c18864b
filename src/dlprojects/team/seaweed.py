"""SeaweedFS's inside doors shut: of all the ports `weed mini` opens, only the S3 API answers
without a client certificate, and it takes signed requests alone.

`weed mini` runs a master, a volume server, a filer, an admin UI and the S3 gateway, each with an
HTTP and a gRPC port, all bound to 127.0.0.1, where every local user reaches them; without
security settings they read, write and delete the stored artifacts with no credential at all.
`security_folder` writes what its `security.toml` (read from the working directory) needs, in a
folder only the team's owner can open:

- a private certificate authority made here, and one certificate signed by it for the servers
  (server and client use): every HTTP port but S3's serves HTTPS and refuses a client without a
  certificate of this authority (`[https.*]` with `ca`), every gRPC port the same (`[grpc.*]`);
  the servers present the certificate to each other (`[https.client]`, `[grpc.client]`). The
  authority's key signs once and is not written to disk.
- JWT signing keys (`[jwt.signing]` and its `read`, `[jwt.filer_signing]` and its `read`):
  volume and filer reads and writes need a token the master or the S3 gateway signs;
- the volume and filer UIs and the filer's directory listings off; the admin UI behind a
  password of its own.

New keys and a new certificate every start: nothing here outlives the servers that use it.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from pathlib import Path

from dlprojects.team import write_owner_only

COMPONENTS = ("master", "volume", "filer", "s3", "admin", "msg_broker", "msg_agent", "worker",
              "mq")  # every [grpc.*] server section SeaweedFS reads
HTTPS = ("master", "volume", "filer", "admin")


def security_folder(folder: Path) -> Path:
    """`folder` (mode 0700) holding security.toml, the authority's certificate and the servers'
    certificate and key (each 0600); returns it, to run `weed` in."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    authority, certificate, key = _certificates()
    paths = {}
    for name, data in (("ca.crt", authority), ("node.crt", certificate), ("node.key", key)):
        paths[name] = write_owner_only(folder / name, data).resolve()
    pair = f'cert = "{paths["node.crt"]}"\nkey = "{paths["node.key"]}"\n'
    sections = [f'[{name}]\nkey = "{secrets.token_hex(32)}"\nexpires_after_seconds = 10\n'
                for name in ("jwt.signing", "jwt.signing.read", "jwt.filer_signing",
                             "jwt.filer_signing.read")]
    sections += ["[access]\nui = false\n", "[filer.expose_directory_metadata]\nenabled = false\n",
                 f'[grpc]\nca = "{paths["ca.crt"]}"\n',
                 *(f"[grpc.{name}]\n{pair}" for name in COMPONENTS), f"[grpc.client]\n{pair}",
                 f'[https.client]\nenabled = true\n{pair}ca = "{paths["ca.crt"]}"\n',
                 *(f'[https.{name}]\n{pair}ca = "{paths["ca.crt"]}"\n' for name in HTTPS),
                 f'[admin]\nuser = "admin"\npassword = "{secrets.token_hex(24)}"\n']
    write_owner_only(folder / "security.toml", "\n".join(sections).encode())
    return folder


def _certificates() -> tuple[bytes, bytes, bytes]:
    """(authority's certificate, servers' certificate, servers' key), PEM; the authority's key
    signs the servers' certificate and is dropped."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def built(subject: str, public_key, issuer: str) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=3650)))

    authority_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    authority = built("dlprojects team S3 store", authority_key.public_key(),
                      "dlprojects team S3 store").add_extension(
        x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(
        authority_key, hashes.SHA256())
    certificate = built("seaweedfs", key.public_key(), "dlprojects team S3 store").add_extension(
        x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
        critical=False).add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
        critical=False).sign(authority_key, hashes.SHA256())
    pem = serialization.Encoding.PEM
    return (authority.public_bytes(pem), certificate.public_bytes(pem),
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
