"""kiln's local AWS emulator: moto server plus the behaviour, faults and recording kiln needs.

`scripts/emulator.py` is the command (its docstring: the overview and the control API). The
package, one module per concern:

    server.py       the process: command line, moto's server with the patches, the URL line
    app.py          the WSGI app: the control API under /_kiln/, everything else to faults.py
    faults.py       recording and fault injection in front of moto for every AWS request
    authorization.py  the IAM authorizations (action, resource ARN, condition context) AWS
                    evaluates for each request, recorded with it
    state.py        behaviour settings, fault settings, recorded requests, refreshes (one lock)
    ec2.py          patches on moto's EC2: instances, images, launch templates
    amis.py         patches on moto's EC2 images and snapshots: keys and sharing, image
                    settings, image references, held and shared snapshots, ResolveAlias
    ssm.py          patches on moto's SSM: the emulated agent and its commands
    autoscaling.py  patches on moto's Auto Scaling: instance refreshes that replace instances
    elbv2.py        patches on moto's ELBv2: target health over time, the healthy-target record
    seed.py         the demo world (POST /_kiln/seed)
    common.py       helpers the others share
    process.py      starting, calling and stopping an emulator process from Python

Services kiln calls with no module here are moto's own: IAM (instance profiles), SSM Parameter
Store reads and Secrets Manager (the values of secret variables, `from: ssm:` and
`from: secretsmanager:`). moto's server routes them by the SigV4 service of the request, and
faults.py records them like every request (GetParameter, GetSecretValue). GetParameter (API
reference): "WithDecryption: Return decrypted values for secure string parameters. This flag is
ignored for String and StringList parameter types." moto stores SecureString values unencrypted
and returns them as such with WithDecryption; it evaluates no KMS key policy.

The service modules' docstrings list the moto 5.2.5 gaps each one covers. They import moto when
they are imported, so only server.patch_moto() imports them; everything else here imports moto
lazily, and process.py needs only the standard library.
"""
