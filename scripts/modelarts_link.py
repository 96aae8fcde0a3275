#!/usr/bin/env python3
"""A small ModelArts client for the benchmark's "what a user would script"
contender: signs requests with SDK-HMAC-SHA256 (the algorithm in the README,
"Request signing") using only the standard library.

  modelarts_link.py list            -> "JOB_ID TASK_ID" lines for every task
  modelarts_link.py link JOB TASK   -> the temporary download URL
  modelarts_link.py links < TASKS   -> "JOB_ID TASK_ID URL" for each "JOB_ID TASK_ID" line

Reads MODELARTS_ENDPOINT, MODELARTS_PROJECT, HUAWEICLOUD_SDK_AK, HUAWEICLOUD_SDK_SK.
"""
import datetime
import hashlib
import hmac
import json
import os
import sys
import urllib.parse
import urllib.request

ENDPOINT = os.environ["MODELARTS_ENDPOINT"].rstrip("/")
PROJECT = os.environ["MODELARTS_PROJECT"]
AK = os.environ["HUAWEICLOUD_SDK_AK"]
SK = os.environ["HUAWEICLOUD_SDK_SK"]


def call(method, path, content_type, body=b""):
    url = urllib.parse.urlsplit(ENDPOINT + path)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    headers = {"content-type": content_type, "host": url.netloc,
               "x-project-id": PROJECT, "x-sdk-date": date}
    if not content_type.startswith("application/json"):
        headers["x-sdk-content-sha256"] = "UNSIGNED-PAYLOAD"
    names = sorted(headers)
    canonical_uri = "/".join(urllib.parse.quote(urllib.parse.unquote(s), safe="-_.~")
                             for s in url.path.split("/"))
    if not canonical_uri.endswith("/"):
        canonical_uri += "/"
    if not body:
        payload = hashlib.sha256(b"").hexdigest()
    else:
        payload = headers.get("x-sdk-content-sha256") or hashlib.sha256(body).hexdigest()
    canonical = "\n".join([method, canonical_uri, "",
                           "".join(f"{n}:{headers[n].strip()}\n" for n in names),
                           ";".join(names), payload])
    to_sign = f"SDK-HMAC-SHA256\n{date}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    signature = hmac.new(SK.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders={';'.join(names)}, "
                                f"Signature={signature}")
    del headers["host"]
    request = urllib.request.Request(ENDPOINT + path, data=body or None, method=method, headers=headers)
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def main():
    if sys.argv[1] == "list":
        page = 0
        while True:
            body = json.dumps({"offset": page, "limit": 50}).encode()
            result = call("POST", f"/v2/{PROJECT}/training-job-searches", "application/json", body)
            for job in result["items"]:
                for task in job["status"].get("tasks", []):
                    print(job["metadata"]["id"], task)
            if len(result["items"]) < 50:
                break
            page += 1
    elif sys.argv[1] == "links":
        for line in sys.stdin:
            job, task = line.split()
            print(job, task, link(job, task))
    else:
        print(link(sys.argv[2], sys.argv[3]))


def link(job, task):
    path = f"/v2/{PROJECT}/training-jobs/{job}/tasks/{task}/logs/url"
    return call("GET", path, "application/octet-stream")["obs_url"]


if __name__ == "__main__":
    main()
