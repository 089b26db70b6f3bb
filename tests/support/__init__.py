"""Helpers shared by the test modules (imported as `tests.support.<name>`, never found through sys.path):

    pipeline          a pipeline on real servers for one test, stages run in-process
    gateway           a gateway in aiohttp's test server, keys made on the spot, signed requests
    gateway_pipeline  a gateway and a pipeline on one database
    fleet             the Procfile's processes on real servers
    ledger            builders and checks for the ledger conformance suite
"""
