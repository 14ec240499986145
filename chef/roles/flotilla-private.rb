# A private-runners manager: docker+machine on Compute Engine with VM reuse (MaxBuilds 20: a VM
# serves many jobs of the same trusted projects) and privileged containers (docker-in-docker).
name 'flotilla-private'
description 'Flotilla manager for private runners: reused GCE VMs, privileged'
run_list 'recipe[flotilla]'
override_attributes(
  'flotilla' => {
    'config' => {
      'concurrent' => 40,
      'log_level' => 'info'
    },
    'runners' => [
      {
        'name' => 'private-gce-1',
        'url' => 'https://gitlab.example.com/',
        'id' => 5202,
        'executor' => 'docker+machine',
        'limit' => 40,
        'docker' => {
          'image' => 'docker:27',
          'privileged' => true,
          'volumes' => ['/certs/client', '/cache']
        },
        'machine' => {
          'IdleCount' => 2,
          'IdleTime' => 3600,
          'MaxBuilds' => 20,
          'MaxGrowthRate' => 5,
          'MachineName' => 'private-%s'
        },
        'gce' => {
          'project' => 'ci-private-runners',
          'zones' => ['europe-west4-a', 'europe-west4-b'],
          'machine_type' => 'e2-standard-8',
          'disk_size_gb' => 200,
          'labels' => { 'team' => 'platform' }
        }
      }
    ]
  }
)
