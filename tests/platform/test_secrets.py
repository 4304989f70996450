"""Keys come from configuration only and never show in errors or reprs."""

from __future__ import annotations

import base64
import secrets

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kaireon_server.dsar.settings import DsarSettings
from kaireon_server.platform.config import Settings
from kaireon_server.platform.errors import ConfigurationError
from kaireon_server.platform.signing import signer_from_env

MARKER = "SECRETMARKER" + secrets.token_hex(8)


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, password: bytes | None) -> str:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode()


def _refused(env: dict[str, str], load: object) -> str:
    with pytest.raises(ConfigurationError) as info:
        load(env)  # type: ignore[operator]
    return str(info.value)


def test_signing_key_errors_never_echo_the_key_or_password() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    good = _pem(ec_key, None)
    body = good.splitlines()[1]  # a line of the key's base64
    cases = {
        "garbage": {
            "COSIGN_KEY": f"-----BEGIN PRIVATE KEY-----\n{MARKER}\n-----END PRIVATE KEY-----"
        },
        "wrong password": {
            "COSIGN_KEY": _pem(ec_key, MARKER.encode()),
            "COSIGN_PASSWORD": MARKER + "x",
        },
        "not P-256": {"COSIGN_KEY": _pem(rsa_key, None)},
    }
    for name, env in cases.items():
        message = _refused(env, signer_from_env)
        assert MARKER not in message, name
        assert body not in message, name
        assert "BEGIN" not in message, name
    signer = signer_from_env({"COSIGN_KEY": good})
    assert body not in repr(signer) and body not in str(signer)


def test_encryption_key_errors_name_versions_only() -> None:
    short = base64.b64encode(MARKER.encode()).decode()  # not 32 bytes
    for value in (f"v1:{short}", f"v1:{MARKER}!!", f"{MARKER}"):
        message = _refused({"KAIREON_ENCRYPTION_KEYS": value}, DsarSettings.from_env)
        assert MARKER not in message and short not in message, message
    good = base64.b64encode(secrets.token_bytes(32)).decode()
    settings = DsarSettings.from_env({"KAIREON_ENCRYPTION_KEYS": f"v1:{good}"})
    assert settings.keyring is not None
    assert good not in repr(settings)


def test_settings_repr_holds_no_secret() -> None:
    env = {
        "DATABASE_URL": f"postgresql://owner:{MARKER}@db/kaireon",
        "KAIREON_APP_DATABASE_PASSWORD": MARKER,
        "KAIREON_JWT_HS256_SECRET": MARKER,
        "KAIREON_TRUST_HEADERS": "false",
    }
    settings = Settings.from_env(env)
    assert MARKER not in repr(settings)
    assert settings.jwt.hs256_secret == MARKER  # read from configuration, not elsewhere
