#!/bin/bash
# Multi-node prediction with torchrun: run this on every machine with its own NODE_RANK.
#   NODE_RANK=0 MASTER_ADDR=node0 bash examples/slurm/torchrun_node.sh my_task.yaml   # on node0
#   NODE_RANK=1 MASTER_ADDR=node0 bash examples/slurm/torchrun_node.sh my_task.yaml   # on node1
set -euo pipefail
TASK_CONFIG=${1:?usage: torchrun_node.sh my_task.yaml}
NNODES=${NNODES:-2}
GPUS=${GPUS:-8}
torchrun --nnodes "$NNODES" --node-rank "${NODE_RANK:?}" --nproc-per-node "$GPUS" \
  --master-addr "${MASTER_ADDR:?}" --master-port "${MASTER_PORT:-29500}" \
  -m lit_infer predict --config "$TASK_CONFIG" --config configs/strategy/multinode.yaml \
  --trainer.num_nodes "$NNODES" --trainer.devices "$GPUS"
