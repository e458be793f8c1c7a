"""Wait for a slotfill server to be ready, send one /v1/tag request and print the answer."""

import json
import sys
import time
import urllib.error
import urllib.request

base, text = sys.argv[1], sys.argv[2]
deadline = time.monotonic() + 60
while True:
    try:
        with urllib.request.urlopen(f"{base}/ready", timeout=2) as response:
            if response.status == 200:
                break
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        pass
    if time.monotonic() > deadline:
        sys.exit(f"server at {base} did not become ready within 60 s (see artifacts/serve.log)")
    time.sleep(0.2)

request = urllib.request.Request(f"{base}/v1/tag", data=json.dumps({"text": text}).encode(),
                                 headers={"Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=10) as response:
    answer = json.load(response)
print(f"POST {base}/v1/tag {json.dumps({'text': text})}")
print(json.dumps(answer, indent=2, ensure_ascii=False))
print("labels:", " ".join(answer["labels"]))
