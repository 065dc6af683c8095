#!/usr/bin/env python3
"""Drives pedm's Google Cloud Resource Manager stand-in with Google's own clients, so that a
stand-in drifting from the real API fails the tests.

usage: gcp_check.py URL CA_FILE RESOURCE KEY_FILE

URL is the stand-in (https://127.0.0.1:PORT), CA_FILE the PEM of its test CA, RESOURCE a
projects/ID, folders/N or organizations/N the stand-in serves, KEY_FILE a service-account key
file whose token_uri is the stand-in. google-auth's service-account credentials get an access
token from the stand-in's token endpoint (the JWT bearer grant, signed by google-auth itself);
google-cloud-resource-manager's REST transport then reads the policy (version 3), writes a
conditional binding with the etag read, reads it back, and checks the errors Google's clients
map to exceptions: a stale etag (409 ABORTED), a bad token (401 UNAUTHENTICATED) and an
unknown resource (403 PERMISSION_DENIED), by HTTP status and Google's error body. Prints what
it saw as JSON; exits 1 on any mismatch.
"""

import json
import os
import sys


def main() -> int:
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    url, ca_file, resource, key_file = sys.argv[1:]
    # requests (under google-auth and the REST transport) trusts the stand-in's CA.
    os.environ["REQUESTS_CA_BUNDLE"] = ca_file

    import google.auth.transport.requests
    import google.oauth2.credentials
    from google.api_core import exceptions
    from google.cloud import resourcemanager_v3
    from google.iam.v1 import iam_policy_pb2, options_pb2, policy_pb2
    from google.oauth2 import service_account
    from google.protobuf import field_mask_pb2
    from google.type import expr_pb2

    sa = service_account.Credentials.from_service_account_file(
        key_file, scopes=["https://www.googleapis.com/auth/cloud-platform"]
    )
    sa.refresh(google.auth.transport.requests.Request())
    creds = google.oauth2.credentials.Credentials(token=sa.token)

    kind = resource.split("/", 1)[0]
    client_type = {
        "projects": resourcemanager_v3.ProjectsClient,
        "folders": resourcemanager_v3.FoldersClient,
        "organizations": resourcemanager_v3.OrganizationsClient,
    }[kind]

    class FixedToken(google.oauth2.credentials.Credentials):
        # A token that cannot be refreshed: the 401 reaches the client as Google sent it.
        def refresh(self, request):
            pass

    def client(c):
        return client_type(
            credentials=c, client_options={"api_endpoint": url}, transport="rest"
        )

    rm = client(creds)
    problems = []

    def get():
        return rm.get_iam_policy(
            request=iam_policy_pb2.GetIamPolicyRequest(
                resource=resource,
                options=options_pb2.GetPolicyOptions(requested_policy_version=3),
            )
        )

    before = get()
    if not before.etag:
        problems.append("getIamPolicy answered no etag")
    policy = policy_pb2.Policy()
    policy.CopyFrom(before)
    policy.version = 3
    policy.bindings.append(
        policy_pb2.Binding(
            role="roles/storage.admin",
            members=["user:official-client@example.com"],
            condition=expr_pb2.Expr(
                title="official-client-check",
                description="written by gcp_check.py",
                expression='request.time < timestamp("2099-01-01T00:00:00Z")',
            ),
        )
    )
    written = rm.set_iam_policy(
        request=iam_policy_pb2.SetIamPolicyRequest(
            resource=resource,
            policy=policy,
            update_mask=field_mask_pb2.FieldMask(paths=["bindings", "etag"]),
        )
    )
    if written.etag == before.etag:
        problems.append("setIamPolicy did not change the etag")
    after = get()
    if after.etag != written.etag:
        problems.append("the policy read back has another etag than setIamPolicy answered")
    mine = [
        b
        for b in after.bindings
        if b.role == "roles/storage.admin"
        and list(b.members) == ["user:official-client@example.com"]
        and b.condition.title == "official-client-check"
        and b.condition.expression == 'request.time < timestamp("2099-01-01T00:00:00Z")'
    ]
    if len(mine) != 1:
        problems.append("the conditional binding written is not read back as written")
    if after.version != 3:
        problems.append(f"policy version {after.version}, want 3")
    for b in before.bindings:
        if b not in after.bindings:
            problems.append(f"binding {b.role} was lost by the write")

    def refused(what, call, http_class, status):
        # The REST transport picks the exception class by HTTP status; Google's error
        # body says the canonical status.
        try:
            call()
            problems.append(f"{what} was accepted")
        except http_class as e:
            body = e.response.json() if e.response is not None else {}
            got = body.get("error", {}).get("status")
            if got != status or not e.message:
                problems.append(f"{what}: error status {got!r}, want {status!r}")

    # A write with the etag read before someone else's write: Google answers 409 ABORTED.
    stale = policy_pb2.Policy()
    stale.CopyFrom(before)
    refused(
        "a stale etag",
        lambda: rm.set_iam_policy(request={"resource": resource, "policy": stale}),
        exceptions.Conflict,
        "ABORTED",
    )
    refused(
        "a bad token",
        lambda: client(FixedToken(token="not-a-token")).get_iam_policy(
            request={"resource": resource}
        ),
        exceptions.Unauthorized,
        "UNAUTHENTICATED",
    )
    refused(
        "an unknown resource",
        lambda: rm.get_iam_policy(request={"resource": f"{kind}/999999999999"}),
        exceptions.Forbidden,
        "PERMISSION_DENIED",
    )

    print(
        json.dumps(
            {
                "resource": resource,
                "etag_before": before.etag.hex(),
                "etag_after": after.etag.hex(),
                "version": after.version,
                "bindings": [
                    {
                        "role": b.role,
                        "members": list(b.members),
                        "condition": b.condition.expression or None,
                    }
                    for b in after.bindings
                ],
                "problems": problems,
            },
            indent=2,
        )
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
