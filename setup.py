# nbdev 2 setup.py: every setting lives in settings.ini; edit it there, not here.
# No pkg_resources (removed from modern setuptools). Fills every field that nbdev's generated
# pyproject.toml marks dynamic.
from configparser import ConfigParser
import shlex

import setuptools

config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

cfg_keys = 'version description keywords author author_email'.split()
expected = cfg_keys + "lib_name user branch license status min_python audience language".split()
for o in expected: assert o in cfg, f"missing expected setting: {o}"
setup_cfg = {o: cfg[o] for o in cfg_keys}

licenses = {'apache2': 'Apache-2.0', 'mit': 'MIT', 'gpl2': 'GPL-2.0-only', 'gpl3': 'GPL-3.0-only', 'bsd3': 'BSD-3-Clause'}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
py_versions = '3.10 3.11 3.12 3.13'.split()
min_python = cfg['min_python']

def reqs(key): return shlex.split(cfg.get(key, '') or '')

# [dev] is everything a contributor runs (notebooks, docs, tests); PySR stays apart (it needs Julia)
extras = {k: reqs(f'{k}_requirements') for k in ('vision', 'notebooks', 'docs', 'pysr')}
extras['dev'] = sorted(set(extras['notebooks'] + extras['docs'] + reqs('dev_requirements')))

package_data = {cfg['lib_name']: cfg['package_data'].split()} if cfg.get('package_data') else {}

setuptools.setup(
    name=cfg['lib_name'],
    license=licenses.get(cfg['license'].lower(), cfg['license']),
    license_files=['LICENSE'],
    classifiers=[
        'Development Status :: ' + statuses[int(cfg['status'])],
        'Intended Audience :: ' + cfg['audience'],
        'Natural Language :: ' + cfg['language'].title(),
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ] + ['Programming Language :: Python :: ' + o for o in py_versions[py_versions.index(min_python):]],
    url=cfg['git_url'],
    project_urls={'Documentation': f"{cfg['doc_host']}{cfg['doc_baseurl']}", 'Source': cfg['git_url']},
    # namespace packages: zoo/ holds data, no __init__.py (find_packages made pip warn "Package would be ignored")
    packages=setuptools.find_namespace_packages(include=[cfg['lib_path'], cfg['lib_path'] + '.*']),
    include_package_data=True,
    package_data=package_data,
    install_requires=reqs('requirements'),
    extras_require=extras,
    python_requires='>=' + min_python,
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    zip_safe=False,
    scripts=[],
    entry_points={
        'console_scripts': cfg.get('console_scripts', '').split(),
        'nbdev': [f"{cfg.get('lib_path')}={cfg.get('lib_path')}._modidx:d"],
    },
    **setup_cfg)
