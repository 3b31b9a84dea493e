# Installation and the Debian package: cmake --install, and cpack -G DEB.
#
#   cmake -S . -B build-pkg && cmake --build build-pkg && (cd build-pkg && cpack -G DEB)
#     -> build-pkg/lease-agent_<PROJECT_VERSION>_amd64.deb
#
# The package (prefix /usr) holds:
#   /usr/bin/lease-agent                       stripped (CPACK_STRIP_FILES)
#   /lib/systemd/system/lease-agent.service    config/lease-agent.service (Type=notify)
#   /etc/lease-agent/agent.xml                 config/agent.xml, a conffile (packaging/conffiles)
#   /usr/share/lease-agent/sql/*.sql           the schema, also embedded in the binary
#   /usr/share/doc/lease-agent/                README.md, PROTOCOL.md, copyright, changelog.gz (a
#                                              native package: lintian wants that name, not
#                                              changelog.Debian.gz), examples/ (agent.xml,
#                                              haproxy.cfg, alerts.yml)
#   /usr/share/man/man1/lease-agent.1.gz       packaging/lease-agent.1
#   /usr/share/lintian/overrides/lease-agent   packaging/lease-agent.lintian-overrides
# and the maintainer scripts of packaging/: postinst makes the lease-agent system user and group
# and neither enables nor starts the unit (agent.xml needs a dsn first); prerm stops a running
# agent on removal; postrm on purge removes /etc/lease-agent and the user it made.
#
# `cmake --install` with another prefix (/usr/local by default) installs the same files under it,
# with the unit in <prefix>/lib/systemd/system (on systemd's search path for /usr/local) and its
# ExecStart rewritten to <prefix>/bin; /etc/lease-agent/agent.xml is written only for prefix /usr
# and never over an existing file (the package's staging tree is always fresh).

include(GNUInstallDirs)

set(LEASE_AGENT_PACKAGING_DIR ${CMAKE_SOURCE_DIR}/packaging)

# --- Files installed as they are.
install(TARGETS lease-agent RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
# A stripped install (cpack's CPACK_STRIP_FILES, cmake --install --strip) drops what dh_strip
# drops as well: the .comment and .note sections (lintian: binary-has-unneeded-section).
if(CMAKE_STRIP)
  install(CODE "
    if(CMAKE_INSTALL_DO_STRIP)
      set(_la_bin [[${CMAKE_INSTALL_BINDIR}/lease-agent]])
      if(NOT IS_ABSOLUTE \"\${_la_bin}\")
        set(_la_bin \"\${CMAKE_INSTALL_PREFIX}/\${_la_bin}\")
      endif()
      execute_process(COMMAND [[${CMAKE_STRIP}]] --remove-section=.comment --remove-section=.note
                              \"\$ENV{DESTDIR}\${_la_bin}\" COMMAND_ERROR_IS_FATAL ANY)
    endif()
  ")
endif()
# Full RELRO (relro is the toolchain's default; bindnow is not): lintian hardening-no-bindnow.
target_link_options(lease-agent PRIVATE LINKER:-z,now)

file(GLOB LEASE_AGENT_SQL_FILES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/sql/*.sql)
list(SORT LEASE_AGENT_SQL_FILES)
install(FILES ${LEASE_AGENT_SQL_FILES} DESTINATION ${CMAKE_INSTALL_DATADIR}/lease-agent/sql)

install(FILES ${CMAKE_SOURCE_DIR}/README.md ${CMAKE_SOURCE_DIR}/sql/PROTOCOL.md
              ${LEASE_AGENT_PACKAGING_DIR}/copyright
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES ${CMAKE_SOURCE_DIR}/config/agent.xml ${CMAKE_SOURCE_DIR}/config/haproxy.cfg
              ${CMAKE_SOURCE_DIR}/config/alerts.yml
        DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)

# --- Files gzipped at build time (gzip -9n: no name, no time stamp, as Debian policy asks).
find_program(GZIP_EXECUTABLE gzip REQUIRED)
set(LEASE_AGENT_PACKAGING_OUT ${CMAKE_BINARY_DIR}/packaging)
set(LEASE_AGENT_GZIPPED)
# A native package (version without a Debian revision): its changelog is changelog.gz.
foreach(pair "changelog:changelog" "lease-agent.1:lease-agent.1")
  string(REPLACE ":" ";" pair "${pair}")
  list(GET pair 0 src)
  list(GET pair 1 dst)
  add_custom_command(
    OUTPUT ${LEASE_AGENT_PACKAGING_OUT}/${dst}.gz
    COMMAND ${CMAKE_COMMAND} -E make_directory ${LEASE_AGENT_PACKAGING_OUT}
    COMMAND ${CMAKE_COMMAND} -E copy ${LEASE_AGENT_PACKAGING_DIR}/${src} ${LEASE_AGENT_PACKAGING_OUT}/${dst}
    COMMAND ${GZIP_EXECUTABLE} -9nf ${LEASE_AGENT_PACKAGING_OUT}/${dst}
    DEPENDS ${LEASE_AGENT_PACKAGING_DIR}/${src}
    COMMENT "gzip -9n packaging/${src}"
    VERBATIM)
  list(APPEND LEASE_AGENT_GZIPPED ${LEASE_AGENT_PACKAGING_OUT}/${dst}.gz)
endforeach()
add_custom_target(lease_agent_packaging_files ALL DEPENDS ${LEASE_AGENT_GZIPPED})
install(FILES ${LEASE_AGENT_PACKAGING_OUT}/changelog.gz DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES ${LEASE_AGENT_PACKAGING_DIR}/lease-agent.lintian-overrides
        DESTINATION ${CMAKE_INSTALL_DATADIR}/lintian/overrides RENAME lease-agent)
install(FILES ${LEASE_AGENT_PACKAGING_OUT}/lease-agent.1.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)

# packaging/changelog names the package's version: it must be this project's VERSION.
file(STRINGS ${LEASE_AGENT_PACKAGING_DIR}/changelog LEASE_AGENT_CHANGELOG_TOP LIMIT_COUNT 1)
if(NOT LEASE_AGENT_CHANGELOG_TOP MATCHES "^lease-agent \\(${PROJECT_VERSION}\\) ")
  message(WARNING "packaging/changelog starts with '${LEASE_AGENT_CHANGELOG_TOP}', not version "
                  "${PROJECT_VERSION}: add an entry for it (the package_deb test fails until then)")
endif()

# --- The systemd unit and the conffile: where they go depends on the prefix at install time
# (cpack installs with prefix /usr into its staging tree; file(INSTALL) adds DESTDIR).
install(CODE "
  set(_la_src [[${CMAKE_SOURCE_DIR}/config/lease-agent.service]])
  set(_la_bindir [[${CMAKE_INSTALL_BINDIR}]])
  set(_la_tmp [[${LEASE_AGENT_PACKAGING_OUT}/unit]])
  if(NOT IS_ABSOLUTE \"\${_la_bindir}\")
    set(_la_bindir \"\${CMAKE_INSTALL_PREFIX}/\${_la_bindir}\")
  endif()
  if(CMAKE_INSTALL_PREFIX STREQUAL \"/usr\")
    set(_la_unitdir /lib/systemd/system)
    set(_la_etcdir /etc/lease-agent)
  else()
    set(_la_unitdir \"\${CMAKE_INSTALL_PREFIX}/lib/systemd/system\")
    set(_la_etcdir)
  endif()
  file(READ \"\${_la_src}\" _la_unit)
  string(REPLACE \"ExecStart=/usr/bin/lease-agent \" \"ExecStart=\${_la_bindir}/lease-agent \" _la_unit \"\${_la_unit}\")
  file(MAKE_DIRECTORY \"\${_la_tmp}\")
  file(WRITE \"\${_la_tmp}/lease-agent.service\" \"\${_la_unit}\")
  file(INSTALL DESTINATION \"\${_la_unitdir}\" TYPE FILE
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
       FILES \"\${_la_tmp}/lease-agent.service\")
  if(_la_etcdir)
    if(EXISTS \"\$ENV{DESTDIR}\${_la_etcdir}/agent.xml\")
      message(STATUS \"Keeping: \$ENV{DESTDIR}\${_la_etcdir}/agent.xml\")
    else()
      # 0644 in the package (lintian); postinst makes it 0640 root:lease-agent.
      file(INSTALL DESTINATION \"\${_la_etcdir}\" TYPE FILE
           PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
           FILES [[${CMAKE_SOURCE_DIR}/config/agent.xml]])
    endif()
  endif()
")

# --- cpack -G DEB
set(CPACK_PACKAGE_NAME lease-agent)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "lease-agent maintainers")
set(CPACK_PACKAGE_CONTACT "lease-agent maintainers <maintainers@users.noreply.r-seed-a23926f5.example>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "failover agent: one master per cluster by a lease in PostgreSQL")
set(CPACK_PACKAGE_DESCRIPTION
"lease-agent runs beside each application server of a cluster whose servers
share one PostgreSQL database. Exactly one node is master and takes all
traffic; the others stand by. Each agent registers its node, renews a
heartbeat and contends for the cluster's lease row in that database; no
other coordination service is needed.

A load balancer asks each agent's /master endpoint (HAProxy: option
httpchk GET /master). Hooks run on promotion and demotion; the lease's
epoch is a fencing token the application can check in its own
transactions. The agent runs under systemd (Type=notify, watchdog).

The package installs the lease-agent system user and the systemd unit, but
neither enables nor starts it: set the dsn in /etc/lease-agent/agent.xml,
apply the schema (lease-agent schema apply), then
systemctl enable --now lease-agent.")
set(CPACK_STRIP_FILES ON)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # lease-agent_<version>_amd64.deb
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${CPACK_PACKAGE_CONTACT}")
# The shared libraries' packages by dpkg-shlibdeps, plus what the maintainer scripts call.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "postgresql-client, haproxy")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${LEASE_AGENT_PACKAGING_DIR}/conffiles
    ${LEASE_AGENT_PACKAGING_DIR}/postinst
    ${LEASE_AGENT_PACKAGING_DIR}/prerm
    ${LEASE_AGENT_PACKAGING_DIR}/postrm)
# Control files 0644, maintainer scripts 0755, as policy asks.
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)

set(CPACK_GENERATOR DEB)
include(CPack)
