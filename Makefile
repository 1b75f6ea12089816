# The two commands of the README (demo, test), and the fast test tier for the inner loop.
.PHONY: setup demo demo-full test test-fast test-seurat5

setup:
	bash scripts/setup.sh

demo:
	bash scripts/demo.sh quick

demo-full:
	bash scripts/demo.sh full

test:
	bash scripts/test.sh

test-fast:
	bash scripts/test.sh --fast

# The Seurat 5 tier alone (R 4.5 / Seurat 5 / NumPy 2 in a Debian trixie root; needs root):
test-seurat5:
	bash scripts/seurat5-test.sh
