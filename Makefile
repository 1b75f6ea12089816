# The two commands of the README (demo, test), and the fast test tier for the inner loop.
.PHONY: setup demo demo-full test test-fast

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
