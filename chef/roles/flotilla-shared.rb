# A shared-runners manager: docker+machine on Compute Engine, one job per VM (MaxBuilds 1),
# privileged off, a warm pool that follows office hours through autoscaling periods.
name 'flotilla-shared'
description 'Flotilla manager for shared runners: one-job GCE VMs, unprivileged'
run_list 'recipe[flotilla]'
override_attributes(
  'flotilla' => {
    'config' => {
      'concurrent' => 200,
      'check_interval' => 3,
      'listen_address' => '0.0.0.0:9252',
      'log_format' => 'json',
      'shutdown_timeout' => 60
    },
    'runners' => [
      {
        'name' => 'shared-gce-1',
        'url' => 'https://gitlab.example.com/',
        'id' => 4101,
        'executor' => 'docker+machine',
        'limit' => 200,
        'request_concurrency' => 4,
        'environment' => ['DOCKER_DRIVER=overlay2', 'FF_NETWORK_PER_BUILD=true'],
        'docker' => {
          'image' => 'ruby:3.3',
          'privileged' => false,
          'pull_policy' => ['always'],
          'volumes' => ['/cache']
        },
        'machine' => {
          'IdleCount' => 5,
          'IdleTime' => 1800,
          'MaxBuilds' => 1,
          'MaxGrowthRate' => 30,
          'MachineName' => 'shared-%s',
          'autoscaling' => [
            { 'Periods' => ['* * 8-18 * * mon-fri *'], 'Timezone' => 'UTC', 'IdleCount' => 40, 'IdleTime' => 1200 },
            { 'Periods' => ['* * * * * sat,sun *'], 'Timezone' => 'UTC', 'IdleCount' => 2, 'IdleTime' => 600 }
          ]
        },
        'gce' => {
          'project' => 'ci-shared-runners',
          'zones' => ['us-east1-c', 'us-east1-d', 'us-east1-b'],
          'machine_type' => 'n2d-standard-2',
          'disk_size_gb' => 50,
          'use_internal_ip' => true,
          'tags' => ['shared-runners'],
          'labels' => { 'team' => 'ci', 'tier' => 'shared' },
          'spot' => false
        },
        'cache' => {
          'Type' => 'gcs',
          'Shared' => true,
          'gcs' => { 'BucketName' => 'ci-shared-runners-cache' }
        }
      }
    ]
  }
)
