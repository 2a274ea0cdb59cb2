"""A faithful copy of the course's Flask blockchain server, for comparisons (scripts/bench-load).

Same routes, same answers, same single in-memory chain as the course's `server.py`: GET /last_block,
POST /mine, GET /chain, POST /transactions/new. The only knobs are the leading-zero count and the
port (0 picks a free one; the chosen address is printed as "listening on http://HOST:PORT").

    python3 tests/compat/flask_server.py --port 0 --zeros 6
"""

import argparse
import hashlib
import json
import sys
from time import time

from flask import Flask, jsonify, request
from werkzeug.serving import make_server

ZEROS = 6


class Blockchain(object):
    def __init__(self):
        self.chain = []
        self.current_transactions = []
        # The genesis block, as in the course.
        self.new_block(previous_hash=1, proof=100)

    def new_block(self, proof, previous_hash=None):
        block = {
            "index": len(self.chain) + 1,
            "timestamp": time(),
            "transactions": self.current_transactions,
            "proof": proof,
            "previous_hash": previous_hash or self.hash(self.chain[-1]),
        }
        self.current_transactions = []
        self.chain.append(block)
        return block

    def new_transaction(self, sender, recipient, amount):
        self.current_transactions.append(
            {"sender": sender, "recipient": recipient, "amount": amount}
        )
        return self.last_block["index"] + 1

    @staticmethod
    def hash(block):
        string_object = json.dumps(block, sort_keys=True)
        block_string = string_object.encode()
        return hashlib.sha256(block_string).hexdigest()

    @property
    def last_block(self):
        return self.chain[-1]

    @staticmethod
    def valid_proof(block_string, proof):
        guess = f"{block_string}{proof}".encode()
        guess_hash = hashlib.sha256(guess).hexdigest()
        return guess_hash[:ZEROS] == "0" * ZEROS


app = Flask(__name__)
blockchain = Blockchain()


@app.route("/mine", methods=["POST"])
def mine():
    data = request.get_json()
    if "proof" not in data or "id" not in data:
        return jsonify({"message": "Missing values"}), 400
    submitted_proof = data["proof"]
    block_string = json.dumps(blockchain.last_block, sort_keys=True)
    if blockchain.valid_proof(block_string, submitted_proof):
        blockchain.new_transaction("0", data["id"], 1)
        previous_hash = blockchain.hash(blockchain.last_block)
        block = blockchain.new_block(submitted_proof, previous_hash)
        return jsonify({"message": "New Block Forged", "block": block}), 200
    return jsonify({"message": "Proof was invalid or already submitted."}), 200


@app.route("/transactions/new", methods=["POST"])
def new_transaction():
    values = request.get_json()
    required = ["sender", "recipient", "amount"]
    if not all(k in values for k in required):
        return jsonify({"message": "Missing Values"}), 400
    index = blockchain.new_transaction(values["sender"], values["recipient"], values["amount"])
    return jsonify({"message": f"Transaction will be added to Block {index}"}), 201


@app.route("/chain", methods=["GET"])
def full_chain():
    return jsonify({"length": len(blockchain.chain), "chain": blockchain.chain}), 200


@app.route("/last_block", methods=["GET"])
def last_block():
    return jsonify({"last_block": blockchain.last_block}), 200


def main():
    global ZEROS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--zeros", type=int, default=6)
    args = parser.parse_args()
    ZEROS = args.zeros
    # The course runs `app.run(...)`: werkzeug's threaded development server, as here.
    server = make_server(args.host, args.port, app, threaded=True)
    print(f"listening on http://{args.host}:{server.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
