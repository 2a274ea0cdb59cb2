"""A course-style blockchain server (Flask), in the variants course students write.

The miner's tests start it on a free port; it prints the port it bound on its first stdout
line, then serves until killed. Variants:

  --shape last_block  GET /last_block -> {"last_block": block}          (the course README)
  --shape bare        GET /last_block -> block
  --shape block       GET /last_block -> {"block": block, "difficulty": D}
  --shape camel       camelCase block keys (previousHash) under {"lastBlock": block}
  --dialect bytes     hashes f"{block_string.encode()}{proof}" instead of f"{block_string}{proof}"
  --premine N         mine N blocks at start-up, so /chain shows which dialect is hashed
  --message TEXT      the success message; --status CODE its HTTP status
  --html-errors N     answer the first N GET /last_block with an HTML 500 page
  --port P            listen on P instead of a free port
"""

import argparse
import hashlib
import json
import sys
import threading
from time import time

from flask import Flask, jsonify, request
from werkzeug.serving import make_server


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="last_block",
                        choices=["last_block", "bare", "block", "camel"])
    parser.add_argument("--dialect", default="json", choices=["json", "bytes"])
    parser.add_argument("--difficulty", type=int, default=3)
    parser.add_argument("--premine", type=int, default=0)
    parser.add_argument("--message", default="New Block Forged")
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--html-errors", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    prev_key = "previousHash" if args.shape == "camel" else "previous_hash"
    chain = []
    lock = threading.Lock()
    html_errors = [args.html_errors]

    def hash_block(block):
        return hashlib.sha256(json.dumps(block, sort_keys=True).encode()).hexdigest()

    def guess(block, proof):
        block_string = json.dumps(block, sort_keys=True)
        if args.dialect == "bytes":
            return f"{block_string.encode()}{proof}".encode()
        return f"{block_string}{proof}".encode()

    def valid_proof(block, proof):
        digest = hashlib.sha256(guess(block, proof)).hexdigest()
        return digest[:args.difficulty] == "0" * args.difficulty

    def new_block(proof, previous_hash, transactions):
        block = {
            "index": len(chain) + 1,
            "timestamp": time(),
            "transactions": transactions,
            "proof": proof,
            prev_key: previous_hash,
        }
        chain.append(block)
        return block

    new_block(100, "1", [])
    for _ in range(args.premine):
        last = chain[-1]
        proof = 0
        while not valid_proof(last, proof):
            proof += 1
        new_block(proof, hash_block(last),
                  [{"sender": "0", "recipient": "premine", "amount": 1}])

    app = Flask(__name__)

    @app.route("/last_block", methods=["GET"])
    def last_block():
        with lock:
            if html_errors[0] > 0:
                html_errors[0] -= 1
                return "<!doctype html><title>500 Internal Server Error</title>", 500
            block = chain[-1]
        if args.shape == "last_block":
            return jsonify({"last_block": block}), 200
        if args.shape == "bare":
            return jsonify(block), 200
        if args.shape == "block":
            return jsonify({"block": block, "difficulty": args.difficulty}), 200
        return jsonify({"lastBlock": block}), 200

    @app.route("/mine", methods=["POST"])
    def mine():
        data = request.get_json()
        if not data or "proof" not in data or "id" not in data:
            return jsonify({"message": "missing values"}), 400
        with lock:
            last = chain[-1]
            if not valid_proof(last, data["proof"]):
                return jsonify({"message": "Proof invalid or already submitted"}), 200
            reward = {"sender": "0", "recipient": data["id"], "amount": 1}
            block = new_block(data["proof"], hash_block(last), [reward])
        return jsonify({"message": args.message, "block": block}), args.status

    @app.route("/chain", methods=["GET"])
    def full_chain():
        with lock:
            return jsonify({"chain": chain, "length": len(chain)}), 200

    server = make_server("127.0.0.1", args.port, app, threaded=True)
    print(server.server_port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
