#!/usr/bin/env python3
"""Start moto's S3 server on a free loopback port with signature checking on.

Prints one JSON line once the server is ready:
  {"endpoint": "http://127.0.0.1:PORT", "access_key": "...", "secret_key": "...", "bucket": "..."}
then keeps running until its standard input closes (so a test process that dies
takes its S3 server with it), or until it is killed.

With --single-threaded, moto answers one request at a time (see
moto_single_threaded.py): for tests of concurrent conditional writes.

With --account=ID moto runs as that AWS account (MOTO_ACCOUNT_ID), and with
--role=NAME it also creates an IAM role NAME that may do everything in S3
and whose trust policy asks for the external id --external-id=X (moto does not check trust
policies: the tests' proxy enforces the external id); the ready line then
carries "account" and "role_arn".

The first three requests run unauthenticated (INITIAL_NO_AUTH_ACTION_COUNT=3;
five with --role): they create an IAM user, give it an S3 policy (and the
role), and create its access key. Every later request must be signed with
that key (or the role's).
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

SINGLE = "--single-threaded" in sys.argv[1:]
BUCKETS = [a for a in sys.argv[1:] if not a.startswith("--")] or ["recordings"]


def flag(name):
    for a in sys.argv[1:]:
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None


ACCOUNT = flag("account") or "123456789012"
ROLE = flag("role")
EXTERNAL_ID = flag("external-id") or "none"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    port = free_port()
    env = dict(os.environ)
    env["INITIAL_NO_AUTH_ACTION_COUNT"] = "5" if ROLE else "3"
    env["MOTO_ACCOUNT_ID"] = ACCOUNT
    for k in ("AWS_CA_BUNDLE", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        env.pop(k, None)
    if SINGLE:
        # One request at a time: see moto_single_threaded.py.
        here = os.path.dirname(os.path.abspath(__file__))
        cmd = [sys.executable, os.path.join(here, "moto_single_threaded.py"), str(port)]
    else:
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(
        cmd,
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).read()
            break
        except Exception:
            if proc.poll() is not None or time.time() > deadline:
                print(json.dumps({"error": "moto did not start"}), flush=True)
                sys.exit(1)
            time.sleep(0.1)

    import boto3  # installed with moto

    def client(service, **kw):
        return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1", **kw)

    iam = client("iam", aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
    iam.create_user(UserName="recvault")
    iam.put_user_policy(
        UserName="recvault",
        PolicyName="s3",
        PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": ["s3:*", "kms:*", "sts:AssumeRole"], "Resource": "*"}],
        }),
    )
    role_arn = None
    if ROLE:
        role_arn = iam.create_role(
            RoleName=ROLE,
            AssumeRolePolicyDocument=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Principal": {"AWS": "*"},
                    "Action": "sts:AssumeRole",
                    "Condition": {"StringEquals": {"sts:ExternalId": EXTERNAL_ID}},
                }],
            }),
        )["Role"]["Arn"]
        iam.put_role_policy(
            RoleName=ROLE,
            PolicyName="s3",
            PolicyDocument=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": "*"}],
            }),
        )
    key = iam.create_access_key(UserName="recvault")["AccessKey"]
    s3 = client("s3", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
    for b in BUCKETS:
        s3.create_bucket(Bucket=b)

    print(json.dumps({
        "endpoint": endpoint,
        "access_key": key["AccessKeyId"],
        "secret_key": key["SecretAccessKey"],
        "bucket": BUCKETS[0],
        "account": ACCOUNT,
        "role_arn": role_arn,
        "pid": proc.pid,
    }), flush=True)

    def watch_stdin():
        try:
            while sys.stdin.read(1):
                pass
        except Exception:
            pass
        proc.terminate()

    threading.Thread(target=watch_stdin, daemon=True).start()
    try:
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()


if __name__ == "__main__":
    main()
