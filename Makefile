# The two commands of the README.
.PHONY: setup demo demo-full test

setup:
	bash scripts/setup.sh

demo:
	bash scripts/demo.sh quick

demo-full:
	bash scripts/demo.sh full

test:
	bash scripts/test.sh
