from distkeras.frontends.cli import run

run()
