from mmcascade.cli.main import app

app()
