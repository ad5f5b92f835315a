"""`fracture-batch info`: the machine, installed backends and decoders, and why missing ones are missing."""
from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
def info(as_json: bool) -> None:
    """Print CPU (model, cores, SIMD/AMX flags, memory), GPU/driver/CUDA, and every backend and
    decoder with its version, or why it is missing and how to install it."""
    from fracture_batch.info import collect_info

    report = collect_info()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    cpu, gpu = report["cpu"], report["gpu"]
    flags = " ".join(f"{k}{'+' if v else '-'}" for k, v in cpu["flags"].items())
    click.echo(f"python    {report['python']} on {report['platform']}")
    click.echo(f"cpu       {cpu['model']}; {cpu['usable_cores']} usable core(s); "
               f"{cpu.get('memory_gib', '?')} GiB RAM")
    click.echo(f"cpu flags {flags}")
    gpus = ", ".join(gpu.get("devices", [])) or f"none ({gpu.get('reason', 'no CUDA')})"
    click.echo(f"gpu       {gpus}; torch CUDA build {gpu.get('torch_cuda_build', '?')}")
    click.echo(f"driver    nvidia-smi: {gpu.get('nvidia_smi')}")
    for section in ("backends", "decoders", "other"):
        click.echo(f"\n{section}:")
        for c in report[section]:
            mark = "yes" if c["available"] else "NO "
            click.echo(f"  {mark} {c['name']:<12} {c['version']:<12} {c['detail']}")
    stack = report["gpu_stack"]
    click.echo("\ngpu stack (CUDA 13):")
    for item in stack["items"]:
        click.echo(f"  {'yes' if item['ok'] else 'NO '} {item['name']:<52} {item['detail']}")
    if stack["fix"]:
        click.echo(f"missing: {', '.join(stack['missing'])}\nadd it:  {stack['fix']}")
    else:
        click.echo("complete: every GPU path can run where a CUDA GPU is present")
