"""Beyond one machine: a container image (`edgecli build`) and manifests (`edgecli export`) for engines
that already exist. The image's command is `edgecli serve --prod` (edgecli/host/server.py)."""
