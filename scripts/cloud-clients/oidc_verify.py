"""Checks an ID token the way a relying party does, with libraries independent of pedm's:
fetches ISSUER/.well-known/openid-configuration (its `issuer` must match exactly), then its
`jwks_uri`, and verifies the token's ES256 signature, issuer, audience and expiry with
google-auth and cryptography. Prints the claims as JSON; exits 1 with the reason when the
token is refused.

usage: oidc_verify.py ISSUER AUDIENCE TOKEN
"""
import json
import sys
import urllib.request

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.auth import jwt


def b64int(s):
    import base64
    return int.from_bytes(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)), "big")


issuer, audience, token = sys.argv[1:4]
with urllib.request.urlopen(issuer.rstrip("/") + "/.well-known/openid-configuration") as r:
    discovery = json.load(r)
if discovery["issuer"] != issuer.rstrip("/"):
    print("refused: discovery names issuer %r" % discovery["issuer"])
    sys.exit(1)
with urllib.request.urlopen(discovery["jwks_uri"]) as r:
    jwks = json.load(r)
certs = {}
for k in jwks["keys"]:
    if k.get("kty") != "EC" or k.get("crv") != "P-256":
        continue
    key = ec.EllipticCurvePublicNumbers(b64int(k["x"]), b64int(k["y"]), ec.SECP256R1()).public_key()
    certs[k["kid"]] = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
try:
    claims = jwt.decode(token, certs=certs, audience=audience)
except Exception as e:  # google-auth raises ValueError and its own errors
    print("refused: %s" % e)
    sys.exit(1)
if claims.get("iss") != discovery["issuer"]:
    print("refused: iss %r" % claims.get("iss"))
    sys.exit(1)
print(json.dumps(claims))
