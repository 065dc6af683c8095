"""Who a kubeconfig makes the official `kubernetes` Python client: loads KUBECONFIG (whose user
runs an exec credential plugin, `pedm kube credentials`), asks the API server with a
SelfSubjectReview and prints the username. Exits 1 with the API server's status when refused.

usage: kube_whoami.py KUBECONFIG
"""
import sys

from kubernetes import client, config

config.load_kube_config(config_file=sys.argv[1])
try:
    review = client.AuthenticationV1Api().create_self_subject_review(
        client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview"))
except client.exceptions.ApiException as e:
    print("refused %s" % e.status)
    sys.exit(1)
print(review.status.user_info.username)
