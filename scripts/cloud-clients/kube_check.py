"""Drives the Kubernetes API stand-in (crates/provision/tests/support/kube_standin.rs) with the
official `kubernetes` Python client: create, read, list (paged) and delete a ClusterRoleBinding
and a RoleBinding, and read the caller's identity. Exits non-zero, saying what, when the
stand-in answers something the real client cannot take.

usage: kube_check.py URL CA_FILE TOKEN
"""
import sys

from kubernetes import client

url, ca_file, token = sys.argv[1:4]
conf = client.Configuration()
conf.host = url
conf.ssl_ca_cert = ca_file
conf.api_key = {"authorization": "Bearer " + token}
api = client.ApiClient(conf)
rbac = client.RbacAuthorizationV1Api(api)


def binding(kind, name, ns=None):
    meta = client.V1ObjectMeta(name=name, namespace=ns, labels={"app.kubernetes.io/managed-by": "check"})
    body = dict(
        metadata=meta,
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="view"),
        subjects=[client.RbacV1Subject(api_group="rbac.authorization.k8s.io", kind="User", name="check@example.com")],
    )
    return client.V1ClusterRoleBinding(**body) if kind == "cluster" else client.V1RoleBinding(**body)


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


made = rbac.create_cluster_role_binding(binding("cluster", "check-crb"))
if made.metadata.resource_version is None:
    fail("no resourceVersion on a created ClusterRoleBinding")
read = rbac.read_cluster_role_binding("check-crb")
if read.subjects[0].name != "check@example.com" or read.role_ref.name != "view":
    fail("read back a different ClusterRoleBinding: %r" % read)
try:
    rbac.create_cluster_role_binding(binding("cluster", "check-crb"))
    fail("a duplicate was created")
except client.exceptions.ApiException as e:
    if e.status != 409:
        fail("a duplicate answered %s, not 409" % e.status)
rbac.create_namespaced_role_binding("payments", binding("ns", "check-rb", "payments"))
names, cont = [], None
while True:
    page = rbac.list_cluster_role_binding(limit=1, _continue=cont) if cont else rbac.list_cluster_role_binding(limit=1)
    names += [i.metadata.name for i in page.items]
    cont = page.metadata._continue
    if not cont:
        break
if "check-crb" not in names:
    fail("the paged list misses check-crb: %r" % names)
all_ns = rbac.list_role_binding_for_all_namespaces()
if not any(i.metadata.name == "check-rb" and i.metadata.namespace == "payments" for i in all_ns.items):
    fail("the all-namespaces list misses payments/check-rb")
read.subjects = [client.RbacV1Subject(api_group="rbac.authorization.k8s.io", kind="Group", name="sre")]
rbac.replace_cluster_role_binding("check-crb", read)
# Client 37 hands a delete's answer back as a plain dict (the API server's metav1.Status).
status = rbac.delete_cluster_role_binding("check-crb")
if not isinstance(status, dict) or status.get("kind") != "Status" or status.get("status") != "Success":
    fail("delete answered %r" % status)
try:
    rbac.read_cluster_role_binding("check-crb")
    fail("a deleted binding is still there")
except client.exceptions.ApiException as e:
    if e.status != 404:
        fail("reading a deleted binding answered %s, not 404" % e.status)
rbac.delete_namespaced_role_binding("check-rb", "payments")
review = client.AuthenticationV1Api(api).create_self_subject_review(
    client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview"))
print("ok " + review.status.user_info.username)
