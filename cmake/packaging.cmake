# Install rules and Debian packages (issue 18): `cpack -G DEB` in a build directory makes
#   ringfence-server  /usr/sbin/ringfence-server, the dashboard, /etc/ringfence/server.conf, its unit
#   ringfence-agent   /usr/sbin/ringfence-agent, /etc/ringfence/agent.conf, its unit
#   ringfence-cli     /usr/bin/ringfence, /etc/ringfence/cli.conf
# each with a man page made from --help (help2man), a changelog and a copyright file, and its
# maintainer scripts (packaging/common/*.in: system user, state directory, the unit enabled and
# started the way Debian's own helpers do it). docker/Dockerfile installs the same packages.
# The packages are checked in the suite by tests/packaging (lintian, systemd-analyze verify, an
# unpacked install that runs).

option(RINGFENCE_PACKAGING "Install rules, man pages and the Debian packages" ON)
if(NOT RINGFENCE_PACKAGING OR RINGFENCE_FUZZ OR RINGFENCE_SANITIZE)
  return()
endif()
if(NOT TARGET ringfence-server OR NOT TARGET ringfence-agent OR NOT TARGET ringfence)
  return()
endif()

find_program(HELP2MAN help2man REQUIRED)  # scripts/install-deps.sh build
find_program(GZIP gzip REQUIRED)
set(_pkg ${CMAKE_SOURCE_DIR}/packaging)
set(_gen ${CMAKE_BINARY_DIR}/packaging)
file(MAKE_DIRECTORY ${_gen})

# Man pages from --help/--version: always what the binary accepts. gzip -9n: reproducible (no
# name or time stamp), maximal compression, as Debian policy asks.
function(rf_man_page target name section summary component)
  set(out ${_gen}/${name}.${section}.gz)
  add_custom_command(
    OUTPUT ${out}
    COMMAND ${HELP2MAN} --no-info --no-discard-stderr --section=${section} --name=${summary}
            --version-string=${PROJECT_VERSION} --output=${_gen}/${name}.${section}
            $<TARGET_FILE:${target}>
    COMMAND ${GZIP} -9nf ${_gen}/${name}.${section}
    DEPENDS ${target}
    COMMENT "man page ${name}(${section})"
    VERBATIM)
  add_custom_target(${name}-man ALL DEPENDS ${out})
  install(FILES ${out} DESTINATION share/man/man${section} COMPONENT ${component})
endfunction()

# The Debian changelog and copyright every package carries (/usr/share/doc/<package>/).
string(TIMESTAMP _rf_pkg_date "%a, %d %b %Y %H:%M:%S +0000" UTC)
function(rf_package_docs component package)
  set(RF_PACKAGE ${package})
  set(RF_VERSION ${PROJECT_VERSION})
  set(RF_DATE ${_rf_pkg_date})
  configure_file(${_pkg}/common/changelog.in ${_gen}/${package}/changelog @ONLY)
  add_custom_command(
    OUTPUT ${_gen}/${package}/changelog.gz
    COMMAND ${GZIP} -9nkf ${_gen}/${package}/changelog
    DEPENDS ${_gen}/${package}/changelog
    VERBATIM)
  add_custom_target(${package}-changelog ALL DEPENDS ${_gen}/${package}/changelog.gz)
  install(FILES ${_gen}/${package}/changelog.gz ${_pkg}/common/copyright
          DESTINATION share/doc/${package} COMPONENT ${component})
endfunction()

# Maintainer scripts from one template per script. shared_dirs: directories the user owns that others
# read (0755), beside its private home. RF_START_CHECK: a shell condition that decides
# whether the unit is started on install (the agent waits until it is configured).
function(rf_maintainer_scripts component package user home home_mode shared_dirs gecos unit
         start_check hint)
  set(RF_PACKAGE ${package})
  set(RF_USER ${user})
  set(RF_HOME ${home})
  set(RF_HOME_MODE ${home_mode})
  set(RF_SHARED_DIRS ${shared_dirs})
  set(RF_GECOS ${gecos})
  set(RF_UNIT ${unit})
  set(RF_START_CHECK ${start_check})
  set(RF_HINT ${hint})
  set(RF_CONFFILES ${ARGN})
  list(JOIN RF_CONFFILES "\n" RF_CONFFILES)
  foreach(script postinst prerm postrm)
    configure_file(${_pkg}/common/${script}.in ${_gen}/${package}/${script} @ONLY
                   FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
                                    WORLD_READ WORLD_EXECUTE)
  endforeach()
  file(WRITE ${_gen}/${package}/conffiles "${RF_CONFFILES}\n")
  string(TOUPPER ${component} C)
  set(CPACK_DEBIAN_${C}_PACKAGE_CONTROL_EXTRA
      ${_gen}/${package}/conffiles ${_gen}/${package}/postinst ${_gen}/${package}/prerm
      ${_gen}/${package}/postrm PARENT_SCOPE)
endfunction()

# server
install(TARGETS ringfence-server RUNTIME DESTINATION sbin COMPONENT server)
install(DIRECTORY ${CMAKE_SOURCE_DIR}/web/ DESTINATION share/ringfence/web COMPONENT server
        PATTERN "node_modules" EXCLUDE)
install(FILES ${_pkg}/server/server.conf DESTINATION /etc/ringfence COMPONENT server)
install(FILES ${_pkg}/server/ringfence-server.service DESTINATION /lib/systemd/system
        COMPONENT server)
rf_man_page(ringfence-server ringfence-server 8 "staged rollouts of content updates" server)
rf_package_docs(server ringfence-server)
rf_maintainer_scripts(server ringfence-server ringfence /var/lib/ringfence 0750 ""
                      "Ringfence server" ringfence-server.service "true"
                      "The admin token is in /var/lib/ringfence/admin.token after the first start."
                      /etc/ringfence/server.conf)

# agent
install(TARGETS ringfence-agent RUNTIME DESTINATION sbin COMPONENT agent)
install(FILES ${_pkg}/agent/agent.conf DESTINATION /etc/ringfence COMPONENT agent)
install(FILES ${_pkg}/agent/ringfence-agent.service DESTINATION /lib/systemd/system
        COMPONENT agent)
rf_man_page(ringfence-agent ringfence-agent 8 "applies staged content updates" agent)
rf_package_docs(agent ringfence-agent)
rf_maintainer_scripts(agent ringfence-agent ringfence-agent /var/lib/ringfence-agent 0700
                      /var/lib/ringfence-content "Ringfence agent" ringfence-agent.service
                      "grep -Eq '^[[:space:]]*server[[:space:]]*=' /etc/ringfence/agent.conf"
                      "Set server, enroll-token and root-key in /etc/ringfence/agent.conf, then: systemctl restart ringfence-agent"
                      /etc/ringfence/agent.conf)

# cli (no daemon: no user, no unit)
install(TARGETS ringfence RUNTIME DESTINATION bin COMPONENT cli)
install(FILES ${_pkg}/cli/cli.conf DESTINATION /etc/ringfence COMPONENT cli)
rf_man_page(ringfence ringfence 1 "staged rollouts of content updates from the command line"
            cli)
rf_package_docs(cli ringfence-cli)
file(WRITE ${_gen}/ringfence-cli/conffiles "/etc/ringfence/cli.conf\n")
set(CPACK_DEBIAN_CLI_PACKAGE_CONTROL_EXTRA ${_gen}/ringfence-cli/conffiles)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME ringfence)
set(CPACK_PACKAGE_VENDOR "Ringfence")
set(CPACK_PACKAGE_CONTACT "Ringfence engineers <engineers@ringfence.invalid>")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL server agent cli)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://ringfence.invalid/")
set(CPACK_DEBIAN_SERVER_PACKAGE_NAME ringfence-server)
set(CPACK_DEBIAN_AGENT_PACKAGE_NAME ringfence-agent)
set(CPACK_DEBIAN_CLI_PACKAGE_NAME ringfence-cli)
set(CPACK_DEBIAN_SERVER_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_AGENT_PACKAGE_DEPENDS "adduser")
set(CPACK_COMPONENT_SERVER_DESCRIPTION "staged rollouts of content updates with automatic rollback\nReleases content updates to rings of endpoints in stages, watches\nheartbeats and crash reports from the agent on every endpoint, and halts\nand rolls back automatically when crashes rise. Includes the web dashboard\nand a systemd unit.")
set(CPACK_COMPONENT_AGENT_DESCRIPTION "endpoint agent for Ringfence staged content updates\nPolls a Ringfence server for signed content, applies it with a local\nsafety net (verification, last-known-good, crash-loop guard) and reports\nheartbeats and crashes.")
set(CPACK_COMPONENT_CLI_DESCRIPTION "command-line client for the Ringfence server\nManages the rings, channels, releases and rollouts of a Ringfence server\nover its REST API.")
include(CPack)
