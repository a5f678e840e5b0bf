"""Content Credentials: a signed C2PA manifest in every delivered JPEG, tied to the file by its hash and to the
picture by the invisible watermark.

The manifest (built and signed with `c2pa-python`) holds the claim generator (imagine), a `c2pa.created` action
with `digitalSourceType = trainedAlgorithmicMedia` and the model as its software agent, and a `c2pa.soft-binding`
assertion naming the watermark (`SOFT_BINDING_ALG`) and its payload. The hard binding (`c2pa.hash.data`) breaks
on any change to the file; the soft binding survives what the watermark survives, so a file whose manifest was
stripped or invalidated still leads back to its job (and to the manifest the job store's copy carries).

Signing credentials: an X.509 chain (leaf first) and its private key, from `provenance.c2pa_cert` and
`provenance.c2pa_key`. Without them, a development pair made once under `<engine.cache_dir>/c2pa/` signs (one
warning per process): manifests stay verifiable (signature and hash binding), but no one else trusts that
certificate. `make_dev_certificate` (also `imagine provenance make-dev-cert`) writes such a pair anywhere.

Reading (`read_manifest`) never fetches anything: remote manifests and OCSP are off. Nothing here logs or raises
with key material in it.
"""

from __future__ import annotations

import base64
import datetime
import importlib.metadata
import io
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from config.settings import ConfigError
from engine.provenance import metadata

logger = logging.getLogger(__name__)

SOFT_BINDING_ALG = "com.imagine.watermark.1"
"""Our watermark, version 1 (`engine.provenance.watermark`), as a C2PA soft-binding algorithm name."""
SOFT_BINDING_NAME = "imagine invisible watermark v1 (48-bit image id)"
DEV_DIRECTORY = "c2pa"
DEV_CHAIN_FILE = "dev-signer-chain.pem"
DEV_KEY_FILE = "dev-signer-key.pem"
DEV_VALIDITY_DAYS = 3650
TRUST_ONLY_FAILURES = frozenset({"signingCredential.untrusted"})
"""Validation failures that say nothing about integrity: the signature and hash binding can still be valid."""
DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")
_C2PA_SETTINGS: dict[str, dict[str, Any]] = {
    # No thumbnail: it would add ~30 KB to every image to show what the image itself shows.
    "builder": {"thumbnail": {"enabled": False}},
    # Verifying reads what is in the file and nothing else: a hostile file cannot make us fetch a URL.
    "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
}


_NO_MANIFEST = ("ManifestNotFound", "JumbfNotFound", "NotSupported", "UnsupportedType")
"""How c2pa-python says a file simply has no manifest (or is a format it does not read)."""


class CredentialError(ConfigError):
    """The signing certificate or key cannot be used. The message names the setting and the file, never the key."""


class ManifestError(RuntimeError):
    """Signing failed (the library's reason, which holds no key material)."""


@dataclass(frozen=True)
class Credentials:
    chain_pem: bytes
    """The signing certificate, then the certificates up to (and preferably including) the root."""
    key_pem: bytes = field(repr=False)
    origin: str = "configured"
    """"configured" (provenance.c2pa_cert/c2pa_key) or "development" (a self-made pair nobody else trusts)."""

    @property
    def algorithm(self) -> c2pa.C2paSigningAlg:
        return _algorithm_for(serialization.load_pem_private_key(self.key_pem, password=None))

    @property
    def root_pem(self) -> str:
        """The last certificate of the chain: what a verifier of this service's own images trusts."""
        return x509.load_pem_x509_certificates(self.chain_pem)[-1].public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class ManifestReport:
    """What a file's C2PA manifest says, and whether it checks out."""

    found: bool
    valid: bool | None = None
    """Signature and hash binding check out (whether or not the signer is trusted)."""
    trusted: bool | None = None
    """The signer's chain ends at a trust anchor (this service's own root certificate, when it has one)."""
    state: str | None = None
    """The library's word: Invalid, Valid or Trusted."""
    issues: tuple[str, ...] = ()
    """Validation failure codes, e.g. assertion.dataHash.mismatch after an edit."""
    signer: str | None = None
    claim_generator: str | None = None
    digital_source_type: str | None = None
    model: str | None = None
    watermark_id: str | None = None
    """The payload the soft-binding assertion names (hex), if it names our watermark."""


def manifest_definition(model: str, watermark_payload: bytes | None) -> dict[str, Any]:
    """The manifest for one generated image, as c2pa-python's Builder takes it."""
    assertions: list[dict[str, Any]] = [
        {
            "label": "c2pa.actions.v2",
            "data": {
                "actions": [
                    {
                        "action": "c2pa.created",
                        "digitalSourceType": metadata.TRAINED_ALGORITHMIC_MEDIA,
                        "softwareAgent": {"name": model or "unknown"},
                        "description": metadata.description_for(model),
                    }
                ]
            },
        }
    ]
    if watermark_payload is not None:
        block = {"scope": {}, "value": base64.b64encode(watermark_payload).decode("ascii")}
        assertions.append(
            {
                "label": "c2pa.soft-binding",
                "data": {"alg": SOFT_BINDING_ALG, "name": SOFT_BINDING_NAME, "blocks": [block]},
            }
        )
    return {
        "claim_generator_info": [{"name": metadata.GENERATOR, "version": _version()}],
        "format": "image/jpeg",
        "assertions": assertions,
    }


class ManifestSigner:
    """Signs JPEGs with one set of credentials. Safe to share between the post-processing threads."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self._algorithm = credentials.algorithm
        self._context = c2pa.Context(c2pa.Settings.from_dict(_C2PA_SETTINGS))
        self._lock = threading.Lock()  # one context for all threads; signing takes ~7 ms per image

    def sign(self, jpeg: bytes, model: str, watermark_payload: bytes | None) -> bytes:
        """The JPEG with a signed manifest embedded (APP11 segments before the image data)."""
        info = c2pa.C2paSignerInfo(self._algorithm, self.credentials.chain_pem, self.credentials.key_pem, None)
        signed = io.BytesIO()
        try:
            with self._lock, c2pa.Signer.from_info(info) as signer:
                builder = c2pa.Builder(manifest_definition(model, watermark_payload), self._context)
                builder.sign(signer, "image/jpeg", io.BytesIO(jpeg), signed)
        except c2pa.C2paError as exc:
            raise ManifestError(f"C2PA signing failed: {exc}") from None
        return signed.getvalue()


def read_manifest(data: bytes, trust_anchors: str | None = None) -> ManifestReport:
    """The manifest in an image file (bytes), validated; trust_anchors: PEM certificates whose chains count as
    trusted. Never raises for a file without a manifest or with a broken one."""
    settings: dict[str, Any] = {"verify": dict(_C2PA_SETTINGS["verify"])}
    if trust_anchors:
        settings["trust"] = {"trust_anchors": trust_anchors}
    try:
        reader = c2pa.Reader(None, io.BytesIO(data), None, c2pa.Context(c2pa.Settings.from_dict(settings)))
    except c2pa.C2paError as exc:
        if any(kind in f"{type(exc).__name__} {exc}" for kind in _NO_MANIFEST):
            return ManifestReport(found=False)
        return ManifestReport(found=True, valid=False, trusted=False, issues=(f"manifest unreadable: {exc}",))
    with reader:
        store = json.loads(reader.json())
    return _report(store)


def _report(store: dict[str, Any]) -> ManifestReport:
    active = store.get("manifests", {}).get(store.get("active_manifest", ""), {})
    failures = store.get("validation_results", {}).get("activeManifest", {}).get("failure", [])
    issues = tuple(sorted({str(item.get("code")) for item in failures}))
    state = store.get("validation_state")
    action = _created_action(active)
    signature = active.get("signature_info", {})
    signer = ", ".join(str(part) for part in (signature.get("common_name"), signature.get("issuer")) if part)
    generator: dict[str, Any] = next(iter(active.get("claim_generator_info", [])), {}) or {}
    return ManifestReport(
        found=True,
        valid=state in ("Valid", "Trusted") or (bool(issues) and set(issues) <= TRUST_ONLY_FAILURES),
        trusted=state == "Trusted",
        state=state,
        issues=issues,
        signer=signer or None,
        claim_generator=generator.get("name"),
        digital_source_type=action.get("digitalSourceType"),
        model=_agent_name(action.get("softwareAgent")),
        watermark_id=_soft_binding_id(active),
    )


def _created_action(manifest: dict[str, Any]) -> dict[str, Any]:
    for assertion in manifest.get("assertions", []):
        if str(assertion.get("label", "")).startswith("c2pa.actions"):
            for action in assertion.get("data", {}).get("actions", []):
                if action.get("action") == "c2pa.created":
                    return dict(action)
    return {}


def _agent_name(agent: object) -> str | None:
    """softwareAgent is a generator-info map in C2PA 2 (a plain string in 1.x manifests)."""
    if isinstance(agent, dict):
        return str(agent.get("name")) if agent.get("name") else None
    return str(agent) if agent else None


def _soft_binding_id(manifest: dict[str, Any]) -> str | None:
    for assertion in manifest.get("assertions", []):
        data = assertion.get("data", {})
        if assertion.get("label") == "c2pa.soft-binding" and data.get("alg") == SOFT_BINDING_ALG:
            for block in data.get("blocks", []):
                try:
                    return base64.b64decode(str(block.get("value", "")), validate=True).hex() or None
                except ValueError:
                    return None
    return None


def load_credentials(cert_path: str, key_path: str) -> Credentials:
    """The configured chain and key, checked to belong together."""
    chain_pem = _read("provenance.c2pa_cert", cert_path)
    key_pem = _read("provenance.c2pa_key", key_path)
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise CredentialError(f"provenance.c2pa_cert: {cert_path} holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise CredentialError(
            f"provenance.c2pa_key: {key_path} is not an unencrypted PEM private key (PKCS#8 or traditional)"
        ) from None
    if _public_bytes(key.public_key()) != _public_bytes(chain[0].public_key()):
        raise CredentialError(
            f"provenance.c2pa_key: the key in {key_path} does not belong to the first certificate in {cert_path}"
        )
    _algorithm_for(key)  # refuse key types C2PA cannot sign with, now rather than at the first image
    return Credentials(chain_pem=chain_pem, key_pem=key_pem, origin="configured")


def resolve_credentials(cert_path: str, key_path: str, cache_dir: str | os.PathLike[str] | None) -> Credentials:
    """Configured credentials if both paths are set; else the development pair under cache_dir (made on first
    use), or one held in memory for this process when there is no cache_dir."""
    if cert_path or key_path:
        if not (cert_path and key_path):
            raise CredentialError("provenance.c2pa_cert and provenance.c2pa_key must be set together")
        return load_credentials(cert_path, key_path)
    _warn_development_once()
    if cache_dir is None:
        return _ephemeral_credentials()
    directory = Path(cache_dir).expanduser() / DEV_DIRECTORY
    chain_path, key_path_ = directory / DEV_CHAIN_FILE, directory / DEV_KEY_FILE
    if not (chain_path.is_file() and key_path_.is_file()):
        make_dev_certificate(directory)
    credentials = load_credentials(str(chain_path), str(key_path_))
    return Credentials(credentials.chain_pem, credentials.key_pem, origin="development")


def service_trust_anchor(cert_path: str, cache_dir: str | os.PathLike[str] | None) -> str | None:
    """The root certificate of this service's own signing chain, if there is one: configured, or the development
    pair already made under cache_dir (never made here). Verifying trusts it, and nothing else."""
    path = Path(cert_path).expanduser() if cert_path else None
    if path is None and cache_dir is not None:
        path = Path(cache_dir).expanduser() / DEV_DIRECTORY / DEV_CHAIN_FILE
    if path is None or not path.is_file():
        return None
    try:
        chain = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        logger.warning("the signing certificate %s cannot be read: manifests will not show as trusted", path)
        return None
    return chain[-1].public_bytes(serialization.Encoding.PEM).decode()


def make_dev_certificate(directory: str | os.PathLike[str], overwrite: bool = False) -> tuple[Path, Path]:
    """Write a development CA + signing certificate chain and its key (mode 0600) into directory: (chain, key).
    C2PA refuses a self-signed signing certificate, hence the two levels."""
    directory = Path(directory).expanduser()
    chain_path, key_path = directory / DEV_CHAIN_FILE, directory / DEV_KEY_FILE
    if not overwrite and (chain_path.exists() or key_path.exists()):
        raise FileExistsError(f"{chain_path} or {key_path} already exists")
    chain_pem, key_pem = _development_pair()
    directory.mkdir(parents=True, exist_ok=True)
    _write_atomically(chain_path, chain_pem, 0o644)
    _write_atomically(key_path, key_pem, 0o600)
    return chain_path, key_path


def _development_pair() -> tuple[bytes, bytes]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name, signer_name = _name("imagine development CA"), _name("imagine development signer")
    ca = (
        _certificate(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signing=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        _certificate(signer_name, ca_name, key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signing=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION, DOCUMENT_SIGNING]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    chain_pem = leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return chain_pem, key_pem


def _certificate(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: datetime.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=DEV_VALIDITY_DAYS))
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "imagine (development, not trusted)"),
        ]
    )


def _key_usage(signing: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signing,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=not signing,
        crl_sign=not signing,
        encipher_only=False,
        decipher_only=False,
    )


_EPHEMERAL: list[Credentials] = []
_EPHEMERAL_LOCK = threading.Lock()
_WARNED: list[bool] = []


def _ephemeral_credentials() -> Credentials:
    with _EPHEMERAL_LOCK:
        if not _EPHEMERAL:
            chain_pem, key_pem = _development_pair()
            _EPHEMERAL.append(Credentials(chain_pem, key_pem, origin="development"))
        return _EPHEMERAL[0]


def _warn_development_once() -> None:
    if not _WARNED:
        _WARNED.append(True)
        logger.warning(
            "C2PA manifests are signed with a development certificate that no one else trusts; "
            "set provenance.c2pa_cert and provenance.c2pa_key to sign with your own (see README)"
        )


def _algorithm_for(key: object) -> c2pa.C2paSigningAlg:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        by_curve = {"secp256r1": c2pa.C2paSigningAlg.ES256, "secp384r1": c2pa.C2paSigningAlg.ES384}
        by_curve["secp521r1"] = c2pa.C2paSigningAlg.ES512
        if key.curve.name in by_curve:
            return by_curve[key.curve.name]
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return c2pa.C2paSigningAlg.ED25519
    if isinstance(key, rsa.RSAPrivateKey):
        return c2pa.C2paSigningAlg.PS256
    raise CredentialError("provenance.c2pa_key: C2PA signs with EC P-256/384/521, Ed25519 or RSA (PSS) keys only")


def _public_bytes(public_key: Any) -> bytes:
    return bytes(public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def _read(setting: str, path: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except FileNotFoundError:
        raise CredentialError(f"{setting}: no such file: {path}") from None
    except OSError as exc:
        raise CredentialError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from None


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    partial = path.with_suffix(".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    os.chmod(partial, mode)  # the umask may have taken bits away
    os.replace(partial, path)


def _version() -> str:
    try:
        return importlib.metadata.version("imagine")
    except importlib.metadata.PackageNotFoundError:  # a bare checkout: the manifest still says who made it
        return "unknown"
