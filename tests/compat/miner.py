"""The course's miner, to the letter; the number of leading zeroes is its only knob.

Usage: python3 miner.py [NODE_URL] [ZEROS]   (reads my_id.txt from the current directory)
"""
import hashlib
import json
import sys

import requests

ZEROS = int(sys.argv[2]) if len(sys.argv) > 2 else 6


def proof_of_work(block):
    block_string = json.dumps(block, sort_keys=True)
    proof = 0
    while valid_proof(block_string, proof) is False:
        proof += 1
    return proof


def valid_proof(block_string, proof):
    guess = f"{block_string}{proof}".encode()
    guess_hash = hashlib.sha256(guess).hexdigest()
    return guess_hash[:ZEROS] == "0" * ZEROS


if __name__ == '__main__':
    node = sys.argv[1] if len(sys.argv) > 1 else "http://localhost:5000"
    f = open("my_id.txt", "r")
    id = f.read()
    print("ID is", id, flush=True)
    f.close()
    coins_mined = 0
    while True:
        r = requests.get(url=node + "/last_block")
        try:
            data = r.json()
        except ValueError:
            print("Error:  Non-json response", flush=True)
            print("Response returned:", flush=True)
            print(r, flush=True)
            break
        new_proof = proof_of_work(data.get('last_block'))
        post_data = {"proof": new_proof, "id": id}
        r = requests.post(url=node + "/mine", json=post_data)
        data = r.json()
        if data.get('message') == 'New Block Forged':
            coins_mined += 1
            print("Total coins mined: " + str(coins_mined), flush=True)
        else:
            print(data.get('message'), flush=True)
